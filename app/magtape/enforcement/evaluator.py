"""The one evaluator that turns policy failures into a decision, for every caller.

The webhook, ``magtape check`` and the background audit all call
:meth:`Enforcer.decide`, so they cannot disagree. For each failure, in order:

1. ``enforce: off`` for its check: not reported (counted as would-deny when
   the deny level would have denied it);
2. a matching, unexpired MagTapeException: reported as a warning naming the
   exception and its expiry (verdict ``exempted``);
3. not blocking (``enforce: warn``, or below the deny level that applies to
   the namespace): a warning;
4. blocking, but the check's ``denyFrom`` date is ahead: a warning "MTxxxx
   will block from <date>" (counted as would-deny);
5. blocking: denies, unless it is an UPDATE that kept a failure the old
   object already had (see :mod:`magtape.enforcement.updates`), or a
   controller derived the object from an owner that has the same failure
   (see :mod:`magtape.enforcement.inheritance`).

Time comes from an injected clock (UTC), read once per decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from magtape.decision import Decision, Finding, Verdict, from_findings
from magtape.enforcement.exceptions import Exemption
from magtape.enforcement.inheritance import Inheritance, inherit
from magtape.enforcement.overrides import CheckRule, Enforce, EnforcementConfig
from magtape.enforcement.state import EnforcementState
from magtape.enforcement.updates import is_update, metadata_only, old_object, old_review
from magtape.policy import DenyLevel, Evaluation
from magtape.review import Review, make_review

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
EvaluateFn = Callable[[Review], Evaluation]
NamespaceLabels = Callable[[str], Mapping[str, str] | None]

NOTE_EXISTING = "[already failing before this update: allowed]"
# Owners consulted for a note: a Pod's ReplicaSet and its Deployment, a Job's Pod's Job
# and its CronJob. The verdict needs only the first; the second names where it started.
MAX_OWNER_DEPTH = 2
_NO_RULE = CheckRule()


def utc_now() -> datetime:
    return datetime.now(UTC)


def no_labels(_namespace: str) -> Mapping[str, str] | None:
    return None


NAME_LABEL = "kubernetes.io/metadata.name"


def labels_from_data(data: Mapping[str, Any], namespace: str) -> Mapping[str, str] | None:
    """A namespace's labels from ``data.kubernetes.namespaces`` (kube-mgmt's layout).

    ``kubernetes.io/metadata.name`` is always there, as the API server sets it
    on every namespace (1.21+): a rule can name namespaces even before their
    object is replicated, and ``magtape check`` sees the labels the webhook sees.
    """
    namespaces = (data.get("kubernetes") or {}).get("namespaces") or {}
    obj = namespaces.get(namespace) if isinstance(namespaces, Mapping) else None
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    found = dict(labels) if isinstance(labels, Mapping) else {}
    if namespace:
        found[NAME_LABEL] = namespace
    return found


class Enforcer:
    """Decides admission from policy failures, exceptions, overrides, UPDATE rules and owners."""

    def __init__(self, state: EnforcementState, default_level: DenyLevel, *,
                 namespace_labels: NamespaceLabels = no_labels, clock: Clock = utc_now,
                 inheritance: Inheritance | None = None) -> None:
        self.state = state
        self.default_level = default_level
        self._namespace_labels = namespace_labels
        self._clock = clock
        self.inheritance = inheritance or Inheritance()

    def now(self) -> datetime:
        return self._clock()

    def deny_level_for(self, namespace: str, config: EnforcementConfig | None = None
                       ) -> DenyLevel:
        config = config or self.state.config
        labels = self._namespace_labels(namespace) if config.namespaces else None
        return config.deny_level_for(labels, self.default_level)

    def decide(self, review: Review, evaluate: EvaluateFn) -> tuple[Evaluation, Decision]:
        """Evaluate ``review`` (and, when needed, its old object) and decide.

        Raises whatever ``evaluate`` raises (EngineError): the caller applies
        its failure policy.
        """
        if review.operation == "DELETE":  # never denied; nothing to evaluate
            level = self.deny_level_for(review.namespace)
            return Evaluation(()), Decision(True, (), (), deny_level=level)
        evaluation = evaluate(review)
        return evaluation, self.judge(review, evaluation, evaluate)

    def judge(self, review: Review, evaluation: Evaluation, evaluate: EvaluateFn, *,
              owner_depth: int = MAX_OWNER_DEPTH) -> Decision:
        now = self._clock()
        config = self.state.config  # one snapshot for the whole decision
        level = self.deny_level_for(review.namespace, config)
        exceptions = self._exceptions_for(review, evaluation, now)
        findings: list[Finding] = []
        would_deny: set[str] = set()
        checks, denies = config.checks, level.denies  # looked up once, used per failure
        for v in evaluation.violations:
            rule = checks.get(v.errcode, _NO_RULE)
            by_level = denies(v.severity)
            if rule.enforce is Enforce.OFF:
                if by_level:
                    would_deny.add(v.policy)
                continue
            # Most namespaces have no exception in force: no generator per failure then.
            exception = (next((e for e in exceptions if e.covers_violation(v)), None)
                         if exceptions else None)
            if exception is not None:
                findings.append(Finding(v, Verdict.EXEMPTED, exception.note))
            elif not (rule.enforce is Enforce.DENY or (rule.enforce is None and by_level)):
                if by_level:  # enforce: warn let through what the level would deny
                    would_deny.add(v.policy)
                findings.append(Finding(v, Verdict.WARN))
            elif rule.scheduled(now):
                would_deny.add(v.policy)
                findings.append(Finding(v, Verdict.SCHEDULED,
                                        f"[{v.errcode} will block from {rule.deny_from_text}]"))
            else:
                findings.append(Finding(v, Verdict.DENY))
        # Verdicts are compared by identity: a list's `in` does that in C (measured).
        if Verdict.DENY in [f.verdict for f in findings] and is_update(review):
            findings = self._keep_existing(review, findings, evaluate,
                                           config.allow_existing_violations)
        if owner_depth > 0 and Verdict.DENY in [f.verdict for f in findings]:
            findings = self._inherit(review, findings, evaluate, owner_depth)
        return from_findings(findings, level, would_deny)

    def _exceptions_for(self, review: Review, evaluation: Evaluation, now: datetime
                        ) -> list[Exemption]:
        """The exceptions in force that match the object and name one of its failures.

        The object is matched once; each failure then only by check ID and container.
        """
        candidates = self.state.exceptions_in(review.namespace)
        if not candidates:  # the usual case
            return []
        meta = review.object.get("metadata")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        labels = labels if isinstance(labels, dict) else None
        codes = {v.errcode for v in evaluation.violations}
        return [e for e in candidates
                if e.active(now) and not e.checks.isdisjoint(codes)
                and e.matches_object(review.namespace, review.kind, review.name, labels)]

    def _inherit(self, review: Review, findings: list[Finding], evaluate: EvaluateFn,
                 depth: int) -> list[Finding]:
        """Allow the denials a controller's object shares with its existing owner.

        The owner is judged now by this same enforcer, as its controller's
        request (its exceptions and overrides included, and its own owner up
        to ``depth`` levels, for the note only): that verdict is what the note
        passes on. Failing to evaluate it leaves the object judged on its own.
        """
        owner = self.inheritance.owner_of(review.username, review.namespace, review.object)
        if owner is None:
            return findings
        owner_review = make_review(owner, review.namespace, username=review.username)
        try:
            owner_evaluation = evaluate(owner_review)
        except Exception as exc:  # EngineError included: the object's own verdict stands
            log.warning("could not evaluate the owner of %s %s/%s (%s); judging it on its own",
                        review.kind, review.namespace, review.name, exc)
            return findings
        owner_decision = self.judge(owner_review, owner_evaluation, evaluate,
                                    owner_depth=depth - 1)
        return inherit(findings, owner, owner_decision.findings)

    @staticmethod
    def _keep_existing(review: Review, findings: list[Finding], evaluate: EvaluateFn,
                       allow_existing: bool) -> list[Finding]:
        """Downgrade denials the old object already had (same policy, same message)."""
        old = old_object(review)
        if old is None or not (allow_existing or metadata_only(old, review.object)):
            return findings
        before = {(v.policy, v.msg) for v in evaluate(old_review(review)).violations}
        return [Finding(f.violation, Verdict.EXISTING, NOTE_EXISTING)
                if f.verdict is Verdict.DENY and (f.violation.policy, f.violation.msg) in before
                else f for f in findings]
