"""What the audit found on one object: the admission decision, kept as report results.

Pure core: an object is wrapped in the CREATE review the API server would
send and decided by the webhook's own :class:`~magtape.enforcement.Enforcer`
(exceptions, overrides, the namespace's deny level), with the evaluator the
caller gives, so the audit, ``magtape check`` and admission cannot disagree.
Only what a PolicyReport keeps is recorded: failures, warnings and
exemptions as results, passes as a count. The same object is also judged as
if ``MAGTAPE_DENY_LEVEL`` were each other level (the "what would be denied"
view); judging again reuses the evaluation, it costs no engine call.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from magtape.decision import Decision, Verdict
from magtape.enforcement import Enforcer
from magtape.enforcement.evaluator import EvaluateFn
from magtape.enforcement.inheritance import controller_reference
from magtape.engine import EngineError
from magtape.kube.objects import Obj, metadata
from magtape.policy import DenyLevel, Severity
from magtape.remediation import Catalogue
from magtape.review import make_review

# PolicyReport result values (wgpolicyk8s.io/v1alpha2) in the order a capped
# report keeps them: what admission would deny first.
FAIL, ERROR, WARN, SKIP = "fail", "error", "warn", "skip"
RESULT_RANK = {FAIL: 0, ERROR: 1, WARN: 2, SKIP: 3}
SEVERITY = {Severity.HIGH: "high", Severity.MED: "medium", Severity.LOW: "low"}
SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "": 3}
# How each verdict of the Enforcer is reported: "fail" is what admission would
# deny now; a scheduled denial (denyFrom ahead) still lets it through.
RESULT_OF = {Verdict.DENY: FAIL, Verdict.WARN: WARN, Verdict.SCHEDULED: WARN,
             Verdict.EXEMPTED: SKIP, Verdict.EXISTING: WARN, Verdict.INHERITED: WARN}
ENGINE_POLICY = "magtape-engine"  # the "policy" of a result no policy could give
# What a failure that denies new objects does to what already runs (docs/audit.md,
# "Opting a namespace in"), the ``running`` of a "fail" result:
# its controllers' objects inherit it: rollouts and re-created Pods go on
RUNNING_INHERITED = "inherited"
RUNNING_RECREATE_DENIED = "recreate-denied"  # no controller re-creates it: deleted, it stays gone
RUNNING_KEPT = "kept"  # UPDATEs keep it (allowExistingViolations); only new objects are denied
# The kinds controllers derive objects from (ReplicaSets, Pods, Jobs) by default.
OWNER_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job",
                         "CronJob", "ReplicationController"})


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The object a result is about (a PolicyReport ``resources`` entry)."""

    namespace: str
    kind: str
    name: str
    api_version: str = ""
    uid: str = ""

    def as_resource(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace,
               "name": self.name, "uid": self.uid}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class AuditResult:
    """One failed, warned, exempted or unevaluable check on one object."""

    policy: str
    check_id: str
    severity: str  # "high", "medium", "low" ("" when unknown)
    result: str  # fail, error, warn, skip
    message: str
    # the Enforcer's verdict: deny, warn, scheduled, exempted, existing, inherited, error
    verdict: str
    note: str = ""  # why it did not deny (an exception, a denyFrom date), if anything did
    url: str = ""  # the check's README
    running: str = ""  # for "fail": what it does to what already runs (RUNNING_*)

    @property
    def rank(self) -> tuple[int, int]:
        return RESULT_RANK[self.result], SEVERITY_RANK.get(self.severity, 3)


@dataclass(frozen=True)
class ObjectAudit:
    """Everything the audit keeps about one object."""

    ref: ObjectRef
    results: tuple[AuditResult, ...]
    passed: int  # policies that applied and passed
    denied_at: frozenset[DenyLevel]  # MAGTAPE_DENY_LEVEL values at which it would be denied

    @property
    def denied(self) -> bool:
        """Admission would deny it now (at the level that applies to it)."""
        return any(r.result == FAIL for r in self.results)


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    meta = metadata(obj)
    return ObjectRef(str(meta.get("namespace") or ""), str(obj.get("kind") or ""),
                     str(meta.get("name") or ""), str(obj.get("apiVersion") or ""),
                     str(meta.get("uid") or ""))


def trimmed(obj: Mapping[str, Any]) -> Obj:
    """The object as a CREATE review carries it: no status, no managedFields, no version.

    Two objects that trim equal decide equal, so a status-only change (most
    Pod events) is not evaluated again.
    """
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for key in ("managedFields", "resourceVersion", "generation"):
        meta.pop(key, None)
    out["metadata"] = meta
    return copy.deepcopy(out)


class Auditor:
    """Decides objects as admission would; thread-safe (the enforcer is)."""

    def __init__(self, enforcer: Enforcer, evaluate: EvaluateFn, catalogue: Catalogue,
                 owner_kinds: frozenset[str] = OWNER_KINDS) -> None:
        self.enforcer = enforcer
        self._evaluate = evaluate
        self._catalogue = catalogue
        self._owner_kinds = owner_kinds
        # What-if enforcers share the state (exceptions, overrides, namespace
        # labels) and differ only in the default deny level: "if MAGTAPE_DENY_LEVEL
        # were raised to L". Namespaces with a level of their own keep it.
        self._what_if = {}
        for level in DenyLevel:
            other = copy.copy(enforcer)
            other.default_level = level
            self._what_if[level] = other

    def audit(self, obj: Mapping[str, Any]) -> ObjectAudit:
        ref = ref_of(obj)
        # An object a controller derives from an owner is re-created by that controller:
        # judged as its request would be (the owner's verdict passes on to it).
        controller = self.enforcer.inheritance.identity
        review = (make_review(dict(obj), ref.namespace, username=controller)
                  if controller and controller_reference(obj) is not None
                  else make_review(dict(obj), ref.namespace))
        try:
            evaluation, decision = self.enforcer.decide(review, self._evaluate)
        except EngineError as exc:
            error = AuditResult(ENGINE_POLICY, "", "", ERROR,
                                f"MagTape could not evaluate this object: {exc}", "error")
            return ObjectAudit(ref, (error,), 0, frozenset())
        running = self._running(obj)
        results = [self._result(decision, i, running) for i in range(len(decision.findings))]
        for err in evaluation.policy_errors:
            results.append(AuditResult(err.policy, err.errcode, SEVERITY[err.severity], ERROR,
                                       f"policy could not be evaluated: {err.message[:300]}",
                                       "error", url=self._url(err.errcode, err.policy)))
        passed = sum(1 for r in evaluation.results if r.passed)
        # Judging again costs no engine call, but nothing to judge is cheaper still.
        denied_at = frozenset(
            level for level, e in self._what_if.items()
            if not e.judge(review, evaluation, self._evaluate).allowed
        ) if evaluation.violations else frozenset()
        ordered = sorted(results, key=lambda r: (r.rank, r.policy, r.message))
        return ObjectAudit(ref, tuple(ordered), passed, denied_at)

    def _running(self, obj: Mapping[str, Any]) -> str:
        """What a failure that denies a new ``obj`` does to ``obj`` as it runs now."""
        if obj.get("kind") in self._owner_kinds:
            return RUNNING_INHERITED if self.enforcer.inheritance.controllers \
                else RUNNING_RECREATE_DENIED
        if obj.get("kind") == "Pod" and controller_reference(obj) is None:
            return RUNNING_RECREATE_DENIED
        return RUNNING_KEPT

    def _result(self, decision: Decision, index: int, running: str) -> AuditResult:
        f = decision.findings[index]
        v = f.violation
        result = RESULT_OF[f.verdict]
        return AuditResult(v.policy, v.errcode, SEVERITY[v.severity], result,
                           v.msg, f.verdict.value, f.note, self._url(v.errcode, v.policy),
                           running if result == FAIL else "")

    def _url(self, check_id: str, policy: str) -> str:
        remedy = self._catalogue.get(check_id) or self._catalogue.get(policy)
        return remedy.url if remedy is not None else ""
