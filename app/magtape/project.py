"""Where MagTape is published: the one place naming its repository, image and version.

Every link MagTape prints (remediation links in denials, Events, Slack and
reports; SARIF's tool URI), the image the Kustomize bases pull and the
release tooling derive from these constants, so a fork changes them here
(and ``hack/release.sh`` keeps ``VERSION`` in step with pyproject.toml; a
test fails when they differ).

The repository: MagTape 3 continues ``tmobile/magtape`` (whose own releases
end at 2.x), so its canonical home stays there, and a link at tag
``v<VERSION>`` resolves to the files of this source tree as released
(tests/test_remediation_links.py maps every link back to a file here).
"""

from __future__ import annotations

VERSION = "3.0.0"  # bumped by hack/release.sh with pyproject.toml's
REPOSITORY = "https://github.com/tmobile/magtape"
IMAGE = "ghcr.io/tmobile/magtape"  # released by .github/workflows/release.yml
TAG = f"v{VERSION}"


def blob_url(path: str, ref: str = TAG) -> str:
    """The web address of ``path`` (repository-relative) at ``ref``."""
    return f"{REPOSITORY}/blob/{ref}/{path.lstrip('/')}"


# The policy READMEs of the running version: links stay valid after later
# releases move or reword them.
DOCS_URL = blob_url("policies")
