"""What people look at: the read-only compliance page (``magtape ui``) and the HTML report.

``magtape check -o html`` and ``magtape audit -o html`` render the same
templates (``templates/``) as the page, so a finding reads the same in a CI
artifact, an e-mail and the cluster's page. ``rows`` holds the presentation
model both share; ``model`` the page's in-memory view of the cluster, kept by
watches; ``web`` the Flask app; ``command`` wires them for ``magtape ui``.
"""
