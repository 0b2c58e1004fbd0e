"""Exceptions, enforcement overrides and UPDATE semantics: one evaluator for every caller.

The webhook, ``magtape check`` and the audit decide with the same
:class:`Enforcer` over the same :class:`EnforcementState`, so they cannot
disagree (docs/exceptions.md). The package is core: it imports no web
framework; its watchers use the Kubernetes adapters below it.
"""

from magtape.enforcement.evaluator import Enforcer, labels_from_data, utc_now
from magtape.enforcement.state import EnforcementState

__all__ = ["EnforcementState", "Enforcer", "labels_from_data", "utc_now"]
