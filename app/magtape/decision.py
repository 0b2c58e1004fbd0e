"""Turns an evaluation into an admission decision under a deny level.

Pure functions of typed values: a request is denied when any violation's
severity is in the deny level's set. Messages are sorted and joined with
", " exactly as the original MagTape did, so existing alert parsers keep
working.
"""

from __future__ import annotations

from dataclasses import dataclass

from magtape.policy import DenyLevel, Evaluation, Violation
from magtape.review import Review


@dataclass(frozen=True)
class Decision:
    allowed: bool
    violations: tuple[Violation, ...]  # every failure, sorted by message
    denying: tuple[Violation, ...]  # the failures that caused a denial

    @property
    def messages(self) -> list[str]:
        return [v.msg for v in self.violations]

    @property
    def message(self) -> str:
        return join_messages(self.violations)


def decide(evaluation: Evaluation, deny_level: DenyLevel) -> Decision:
    violations = evaluation.violations
    denying = tuple(v for v in violations if deny_level.denies(v.severity))
    return Decision(allowed=not denying, violations=violations, denying=denying)


def join_messages(violations: tuple[Violation, ...]) -> str:
    return ", ".join(sorted(v.msg for v in violations))


@dataclass(frozen=True)
class Outcome:
    """Everything notifications and metrics need to know about one answer."""

    review: Review
    decision: Decision
    deny_level: DenyLevel
    evaluation: Evaluation | None = None
    engine_error: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def violations(self) -> tuple[Violation, ...]:
        return self.decision.violations
