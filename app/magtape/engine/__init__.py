"""The policy-engine interface the core depends on.

Two implementations sit behind it: ``embedded`` (regopy, in-process, the
default) and ``opa`` (an OPA sidecar over its REST Data API). The core only
sees :class:`PolicyEngine`; nothing outside ``magtape.engine`` imports regopy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from magtape.policy import Evaluation, LoadReport, PolicyModule
from magtape.review import Review


class EngineError(Exception):
    """The engine could not evaluate a request (exception, timeout, nothing loaded)."""


class PolicyEngine(Protocol):
    """Evaluates admission requests against the active policy set."""

    def evaluate(self, review: Review) -> Evaluation:
        """Evaluate the policies that target the request's kind.

        Raises :class:`EngineError` when no answer can be given.
        """
        ...

    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        """Compile ``modules`` with base documents ``data`` and swap them in.

        The new set is fully built before it replaces the old one; requests in
        flight finish on the old one. Broken policies are reported in the
        returned report and left out; the others stay active.
        """
        ...

    @property
    def ready(self) -> bool:
        """True once a policy set has been loaded."""
        ...

    @property
    def last_report(self) -> LoadReport | None:
        """The report of the most recent :meth:`load`."""
        ...
