"""Documents as the cluster holds them, for the page's tests and benchmark: PolicyReports
as the audit writes them (built by its own ``build_report``), Namespaces, a
MagTapeException and MagTape's Events (built by ``notify.events``'s shape)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from magtape.audit.report import build_report
from magtape.audit.results import AuditResult, ObjectAudit, ObjectRef
from magtape.enforcement.exceptions import API_GROUP, API_VERSION, KIND
from magtape.policy import DenyLevel
from magtape.remediation import default_catalogue
from magtape.ui.model import Model, Spawn

Obj = dict[str, Any]
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SEVERITY = {"MT2001": "high", "MT1003": "medium", "MT1001": "low"}
MESSAGE = {"MT2001": '[FAIL] HIGH - Found privileged Security Context for container "app" '
                     "(MT2001)",
           "MT1003": '[FAIL] MED - Resource limits missing (CPU/MEM) for container "app" '
                     "(MT1003)",
           "MT1001": '[FAIL] LOW - Liveness Probe missing for container "app" (MT1001)'}
POLICY = {"MT2001": "privileged-pod", "MT1003": "resource-limits", "MT1001": "liveness-probe"}


def namespace(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"k8s.t-mobile.com/magtape": "enabled",
                                                  **labels}}}


def result(check: str, outcome: str, note: str = "") -> AuditResult:
    return AuditResult(POLICY[check], check, SEVERITY[check], outcome, MESSAGE[check],
                       {"fail": "deny", "warn": "warn", "skip": "exempted"}[outcome], note)


def report(ns: str, objects: dict[str, list[AuditResult]], passed: int = 0) -> Obj:
    audits = [ObjectAudit(ObjectRef(ns, "Deployment", name, "apps/v1"), tuple(rs), 1,
                          frozenset({DenyLevel.LOW}) if any(r.result == "fail" for r in rs)
                          else frozenset()) for name, rs in objects.items()]
    audits += [ObjectAudit(ObjectRef(ns, "Deployment", f"ok-{i}", "apps/v1"), (), 3,
                           frozenset()) for i in range(passed)]
    return build_report(ns, audits)


def exception(ns: str, name: str, checks: list[str], expires: datetime, owner: str = "team-a",
              ticket: str = "OPS-1") -> Obj:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": ns,
                         "creationTimestamp": (expires - timedelta(days=10)).strftime(
                             "%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"checks": checks, "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "reason": "vendor image, fix planned", "owner": owner, "ticket": ticket,
                     "match": {"kinds": ["Deployment"], "names": ["legacy-*"]}}}


def event(ns: str, name: str, denied: bool, checks: list[str], at: datetime,
          user: str = "jane@example.com", uid: str = "") -> Obj:
    note = "\n".join(MESSAGE[c] for c in checks)
    return {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"{name}-x", "namespace": ns, "uid": uid or f"{ns}-{name}-{at}",
                         "labels": {"magtape-event": "policy-failure"},
                         "annotations": {"magtape.k8s.t-mobile.com/requested-by": user}},
            "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "type": "Warning",
            "reason": "MagTapePolicyFailure", "action": "Denied" if denied else "Allowed",
            "note": note, "regarding": {"kind": "Deployment", "namespace": ns, "name": name}}


def filled_model(now: datetime = NOW, spawn: Spawn | None = None) -> Model:
    """Three namespaces: a failing one with an exemption, a warned one, a clean one."""
    model = Model(DenyLevel.LOW, default_catalogue(), clock=lambda: now, spawn=spawn)
    model.namespaces.replace([namespace("team-a", **{"k8s.t-mobile.com/pod-security":
                                                     "restricted"}),
                              namespace("team-b"), namespace("team-c")])
    model.exception_watch.replace([
        exception("team-a", "legacy-priv", ["MT2001"], now + timedelta(days=3)),
        exception("team-b", "old-one", ["MT1003"], now - timedelta(days=1), owner="team-b",
                  ticket="OPS-2")])
    model.reports.replace([
        report("team-a", {"priv": [result("MT2001", "fail"), result("MT1001", "warn")],
                          "legacy-app": [result(
                              "MT2001", "skip",
                              "[exempted by MagTapeException team-a/legacy-priv until "
                              f"{(now + timedelta(days=3)).strftime('%Y-%m-%dT%H:%M:%SZ')}]")]}),
        report("team-b", {"web": [result("MT1003", "warn")]}, passed=2),
        report("team-c", {}, passed=4)])
    model.history.replace([event("team-a", "priv", True, ["MT2001", "MT1001"],
                                 now - timedelta(minutes=5)),
                           event("team-b", "web", False, ["MT1003"],
                                 now - timedelta(minutes=30), user="ci-bot")])
    for resource in ("wgpolicyk8s.io/v1alpha2/policyreports", "v1/namespaces"):
        model.health.expect(resource)
        model.health.succeeded(resource)
    return model
