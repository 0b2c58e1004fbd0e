"""Turns an evaluation into an admission decision under a deny level.

Pure functions of typed values: a request is denied when any violation's
verdict is "deny". With no exception, override or UPDATE to consider
(:func:`decide`), that is when a violation's severity is in the deny level's
set; :mod:`magtape.enforcement` builds richer decisions (exempted, scheduled,
pre-existing and inherited failures) from the same :class:`Finding` vocabulary. Messages are
sorted and joined with ", " exactly as the original MagTape did, so existing
alert parsers keep working; warnings add a short note after a message only
when something other than the deny level decided it.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from magtape.policy import DenyLevel, Evaluation, Violation
from magtape.review import Review


class Verdict(enum.Enum):
    """What happened to one failure (the ``result`` of an exempted one is counted apart)."""

    DENY = "deny"  # denies the request
    WARN = "warn"  # below the deny level, or the check is set to warn
    EXEMPTED = "exempted"  # a MagTapeException matched it
    SCHEDULED = "scheduled"  # would deny, but the check's denyFrom date is still ahead
    EXISTING = "existing"  # an UPDATE kept a failure the old object already had
    INHERITED = "inherited"  # a controller derived it from an owner that has the same failure


@dataclass(frozen=True)
class Finding:
    """One reported failure, what was decided about it, and why (``note``)."""

    violation: Violation
    verdict: Verdict
    note: str = ""

    @property
    def warning(self) -> str:
        """The admission warning: the policy's message, plus the reason when there is one."""
        return f"{self.violation.msg} {self.note}" if self.note else self.violation.msg


@dataclass(frozen=True)
class Decision:
    allowed: bool
    violations: tuple[Violation, ...]  # every reported failure, sorted by message
    denying: tuple[Violation, ...]  # the failures that caused a denial
    findings: tuple[Finding, ...] = ()  # one per violation, same order; () for plain decisions
    deny_level: DenyLevel | None = None  # the level that applied (a namespace may override)
    would_deny: tuple[str, ...] = ()  # policies an override or a future date let through

    @property
    def messages(self) -> list[str]:
        """Warnings and alert text: each failure, with the reason it did not deny if any."""
        if self.findings:
            return [f.warning for f in self.findings]
        return [v.msg for v in self.violations]

    @functools.cached_property  # an answer logs it and sends it as its status message
    def message(self) -> str:
        return join_messages(self.violations)

    @property
    def exempted_policies(self) -> frozenset[str]:
        """Policies every one of whose failures an exception covered (metrics: "exempted")."""
        if Verdict.EXEMPTED not in [f.verdict for f in self.findings]:
            return frozenset()  # the usual case, without the per-policy tally
        by_policy: dict[str, bool] = {}
        for f in self.findings:
            exempt = f.verdict is Verdict.EXEMPTED
            by_policy[f.violation.policy] = by_policy.get(f.violation.policy, True) and exempt
        return frozenset(p for p, all_exempt in by_policy.items() if all_exempt)

    @property
    def inherited_policies(self) -> frozenset[str]:
        """Policies whose failures were all inherited or exempted, one at least inherited
        (metrics: "inherited"): a rollout went through on its owner's verdict."""
        if Verdict.INHERITED not in [f.verdict for f in self.findings]:
            return frozenset()  # the usual case, without the per-policy tally
        allowed = (Verdict.INHERITED, Verdict.EXEMPTED)
        by_policy: dict[str, bool] = {}
        some: set[str] = set()
        for f in self.findings:
            policy = f.violation.policy
            by_policy[policy] = by_policy.get(policy, True) and f.verdict in allowed
            if f.verdict is Verdict.INHERITED:
                some.add(policy)
        return frozenset(p for p in some if by_policy[p])


def decide(evaluation: Evaluation, deny_level: DenyLevel) -> Decision:
    """The plain decision: the deny level alone (no exceptions, overrides or UPDATE rules)."""
    violations = evaluation.violations
    denying = tuple(v for v in violations if deny_level.denies(v.severity))
    return Decision(allowed=not denying, violations=violations, denying=denying,
                    deny_level=deny_level)


def from_findings(findings: list[Finding], deny_level: DenyLevel,
                  would_deny: set[str]) -> Decision:
    """A decision from per-failure verdicts, given in their evaluation's order.

    That is :attr:`Evaluation.violations` order, already the order :func:`decide`
    gives (the engines sort each policy's violations, and all of a policy's
    violations have its severity), so they are kept as they are: no sort per request.
    """
    ordered = tuple(findings)
    denying = tuple([f.violation for f in ordered if f.verdict is Verdict.DENY])
    return Decision(allowed=not denying, violations=tuple([f.violation for f in ordered]),
                    denying=denying, findings=ordered, deny_level=deny_level,
                    would_deny=tuple(sorted(would_deny)))


def join_messages(violations: tuple[Violation, ...]) -> str:
    return ", ".join(sorted(v.msg for v in violations))


@dataclass(frozen=True)
class Outcome:
    """Everything notifications and metrics need to know about one answer.

    ``reminder`` marks a notice that is not an admission at all (an exception
    about to expire): notifiers send it to the namespace's Slack target even
    when alerts for allowed requests are off.
    """

    review: Review
    decision: Decision
    deny_level: DenyLevel
    evaluation: Evaluation | None = None
    engine_error: str | None = None
    reminder: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def violations(self) -> tuple[Violation, ...]:
        return self.decision.violations
