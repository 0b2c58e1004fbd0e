"""The audit's pure parts: one object's findings, a namespace's bounded report, metric tallies.

Objects are decided by the real built-in policies in the shared engine and
the webhook's Enforcer; reports are checked for their cap (results and
bytes), the count of what the cap left out, the order of what it kept, and
content that compares equal when nothing changed.
"""

from __future__ import annotations

import json
from typing import Any

from enforcementsupport import container, deployment, exception, pod
from magtape.audit.report import OMITTED, TOTAL, ReportLimits, build_report, content
from magtape.audit.results import FAIL, SKIP, WARN, Auditor, AuditResult, ObjectAudit, ObjectRef
from magtape.audit.tally import tally
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.exceptions import parse_exception
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import DenyLevel
from magtape.remediation import default_catalogue


def auditor(engine: EmbeddedEngine, level: DenyLevel = DenyLevel.LOW,
            exceptions: list[dict[str, Any]] | None = None) -> Auditor:
    from datetime import timedelta

    from enforcementsupport import NOW

    parsed = [parse_exception(e, max_lifetime=timedelta(days=90)) for e in exceptions or []]
    enforcer = Enforcer(EnforcementState(exceptions=parsed), level, clock=lambda: NOW)
    return Auditor(enforcer, engine.evaluate, default_catalogue())


def test_a_privileged_pod_fails_with_check_id_severity_and_readme(
        builtin_engine: EmbeddedEngine) -> None:
    audit = auditor(builtin_engine).audit(pod("agent", container("a", privileged=True)))
    assert audit.ref == ObjectRef("team-a", "Pod", "agent", "v1")
    [result] = audit.results
    assert (result.policy, result.check_id, result.severity, result.result) == (
        "privileged-pod", "MT2001", "high", FAIL)
    assert "privileged" in result.message
    assert result.url.endswith("/privileged-pod/README.md")
    assert audit.passed > 5  # the other policies applied and passed
    # LOW denies HIGH failures; so does every stricter level; OFF none.
    assert audit.denied_at == {DenyLevel.LOW, DenyLevel.MED, DenyLevel.HIGH}


def test_below_the_deny_level_is_warn_and_counts_only_at_stricter_levels(
        builtin_engine: EmbeddedEngine) -> None:
    audit = auditor(builtin_engine).audit(deployment("web", container("a", limits=False)))
    assert {(r.check_id, r.result) for r in audit.results} == {("MT1003", WARN)}
    assert audit.denied_at == {DenyLevel.HIGH}  # MT1003 is LOW: only HIGH denies it
    assert not audit.denied


def test_an_exception_makes_it_a_skip_result_naming_the_exception(
        builtin_engine: EmbeddedEngine) -> None:
    audit = auditor(builtin_engine, exceptions=[exception()]).audit(
        pod("legacy-agent", container("a", privileged=True)))
    [result] = audit.results
    assert (result.result, result.verdict) == (SKIP, "exempted")
    assert "MagTapeException team-a/legacy-priv" in result.note
    assert not audit.denied_at  # exempted at every level


def _failing(n: int, namespace: str = "big") -> list[ObjectAudit]:
    return [ObjectAudit(ObjectRef(namespace, "Pod", f"pod-{i:05d}", "v1", f"uid-{i}"),
                        (AuditResult("privileged-pod", "MT2001", "high", FAIL,
                                     f'Found privileged Security Context for container "c{i}" '
                                     "(MT2001)", "deny", url="https://example.com/README.md"),
                         AuditResult("emptydir", "MT1009", "low", WARN, "emptyDir (MT1009)",
                                     "warn")),
                        7, frozenset({DenyLevel.LOW}))
            for i in range(n)]


def test_5000_failing_objects_stay_under_the_cap_with_a_correct_count() -> None:
    limits = ReportLimits(max_results=500, max_bytes=512 * 1024)
    report = build_report("big", _failing(5000), limits)
    assert len(report["results"]) == 500
    assert report["metadata"]["annotations"][OMITTED] == str(10_000 - 500)
    assert report["metadata"]["annotations"][TOTAL] == "10000"
    assert report["summary"] == {"pass": 35_000, "fail": 5000, "warn": 5000, "error": 0,
                                 "skip": 0}
    assert len(json.dumps(report)) < limits.max_bytes + 4096
    # What admission would deny is kept before warnings.
    assert {r["result"] for r in report["results"]} == {"fail"}
    first = report["results"][0]
    assert first["rule"] == "MT2001" and first["severity"] == "high"
    assert first["resources"] == [{"apiVersion": "v1", "kind": "Pod", "namespace": "big",
                                   "name": "pod-00000", "uid": "uid-0"}]
    assert first["properties"]["readme"] == "https://example.com/README.md"


def test_the_byte_cap_applies_when_results_are_large() -> None:
    report = build_report("big", _failing(5000), ReportLimits(max_results=10_000,
                                                              max_bytes=64 * 1024))
    size = len(json.dumps(report["results"], separators=(",", ":")))
    assert size <= 64 * 1024
    kept = len(report["results"])
    assert 0 < kept < 10_000
    assert report["metadata"]["annotations"][OMITTED] == str(10_000 - kept)


def test_content_is_deterministic_whatever_the_input_order() -> None:
    audits = _failing(50)
    a = build_report("big", audits, ReportLimits(max_results=20))
    b = build_report("big", list(reversed(audits)), ReportLimits(max_results=20))
    assert content(a) == content(b)
    stored = {**a, "metadata": {**a["metadata"], "resourceVersion": "7", "uid": "x"}}
    assert content(stored) == content(b)
    assert content(build_report("big", audits[:-1])) != content(b)


def test_tally_bounds_namespace_labels_and_reports_every_level() -> None:
    audits = [a for i in range(5) for a in _failing(i + 1, f"ns-{i}")]
    violations, would_deny = tally(audits, max_namespaces=2)
    assert {k[0] for k in violations} == {"ns-4", "ns-3", "other"}
    assert violations[("ns-4", "privileged-pod", "high")] == 5
    assert violations[("other", "privileged-pod", "high")] == 1 + 2 + 3
    assert would_deny[("ns-4", "LOW")] == 5 and would_deny[("ns-4", "OFF")] == 0
