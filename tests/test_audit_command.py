"""``magtape audit`` against the shared fake API server: table, JSON, exit codes, and agreement
with the reports the in-cluster audit writes on the same cluster.

(The e2e suite runs the same comparison against the real API server; this one
is fast and also covers exceptions read from the cluster and the namespace
scope.)
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from enforcementsupport import container, deployment, exception, pod
from fakekube import FakeKube, Resource
from magtape.audit.command import AuditCommandOptions, run_audit
from magtape.audit.controller import AuditController
from magtape.enforcement import EnforcementState
from magtape.enforcement.exceptions import parse_exception
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import DenyLevel
from magtape.settings import Settings
from test_audit_controller import namespace, register, report, start
from waiting import eventually


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    register(fake_kube)
    fake_kube.register(Resource("magtape.k8s.t-mobile.com/v1alpha1", "magtapeexceptions",
                                "MagTapeException", True))
    fake_kube.seed(namespace("team-a"), namespace("quiet", opted_in=False),
                   pod("agent", container("a", privileged=True)),
                   pod("legacy-agent", container("a", privileged=True)),
                   deployment("web", container("a", limits=False)),
                   pod("other", container("a", privileged=True), namespace="quiet"),
                   live_exception())
    return fake_kube


def live_exception() -> dict[str, Any]:
    """MT2001 excepted for legacy-* in team-a, for 30 days from the real now."""
    return exception(expires=datetime.now(UTC) + timedelta(days=30), created=None)


def audit(kube: FakeKube, *args: str, level: DenyLevel = DenyLevel.LOW,
          **options: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(Settings(deny_level=level), AuditCommandOptions(*args, **options), out, err,
                     api_client=kube.api_client())
    return code, out.getvalue(), err.getvalue()


def test_the_table_lists_findings_and_the_exit_code_follows_the_deny_level(
        kube: FakeKube) -> None:
    code, out, _ = audit(kube)
    assert code == 1  # the privileged Pod is denied at LOW
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "OBJECT", "CHECK", "SEVERITY", "RESULT", "MESSAGE"]
    assert any("Pod/agent" in line and "MT2001" in line and " fail " in line for line in lines)
    assert any("Pod/legacy-agent" in line and " skip " in line for line in lines)  # exempted
    assert any("Deployment/web" in line and "MT1003" in line and " warn " in line
               for line in lines)
    assert not any("quiet" in line for line in lines)  # not opted in
    assert lines[-1] == "3 objects audited, 3 results; 1 would be denied at deny level LOW"
    code, out, _ = audit(kube, level=DenyLevel.OFF)
    assert code == 0 and "0 would be denied at deny level OFF" in out
    code, out, _ = audit(kube, "table", ("quiet",))
    assert code == 1 and "Pod/other" in out and "team-a" not in out


def test_json_prints_the_reports_the_audit_writes(kube: FakeKube,
                                                  builtin_engine: EmbeddedEngine) -> None:
    # The webhook's enforcement state holds the cluster's exception, as its watch would.
    state = EnforcementState(exceptions=[parse_exception(live_exception(),
                                                         max_lifetime=timedelta(days=90))])
    controller: AuditController = start(kube, builtin_engine, state)[0]
    try:
        eventually(lambda: controller.idle and report(kube, "team-a"), 30, "the audit's report")
    finally:
        controller.stop()
    code, out, _ = audit(kube, "json")
    doc = json.loads(out)
    assert code == 1 and doc["denyLevel"] == "LOW"
    assert [r["name"] for r in doc["wouldDeny"]] == ["agent"]
    [printed] = doc["reports"]
    stored = report(kube, "team-a")
    assert stored is not None
    assert printed["results"] == stored["results"]
    assert printed["summary"] == stored["summary"]


def test_without_a_cluster_it_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    assert run_audit(Settings(), AuditCommandOptions(), out, err) == 2
    assert "set KUBECONFIG" in err.getvalue()


def test_a_namespace_not_opted_in_is_previewed(kube: FakeKube) -> None:
    """What labelling it would deny when created anew, and what running workloads inherit."""
    bare = pod("bare", container("a", privileged=True), namespace="quiet")
    del bare["metadata"]["ownerReferences"]
    kube.seed(deployment("legacy-web", container("a", privileged=True), namespace="quiet"), bare)
    code, out, _ = audit(kube, "table", ("quiet",))
    assert code == 1
    preview = out[out.index("quiet is not opted in"):].splitlines()
    assert preview == [
        "quiet is not opted in. Once labelled k8s.t-mobile.com/magtape=enabled:",
        "  denied if created anew: 3 (Deployment/legacy-web, Pod/bare, Pod/other)",
        "  keep rolling out, their ReplicaSets, Pods and Jobs inherit these failures: "
        "Deployment/legacy-web",
        "  run on, but denied if deleted or evicted and created again: Pod/bare",
        "  updates keep these failures: Pod/other"]
    code, out, _ = audit(kube, "json", ("quiet",))
    [preview_doc] = json.loads(out)["optIn"]
    assert preview_doc["namespace"] == "quiet" and preview_doc["optedIn"] is False
    assert [r["name"] for r in preview_doc["inheritedByRunning"]] == ["legacy-web"]
    assert [r["name"] for r in preview_doc["deniedIfRecreated"]] == ["bare"]
    [report_doc] = json.loads(out)["reports"]
    running = {r["resources"][0]["name"]: r["properties"].get("running")
               for r in report_doc["results"] if r["result"] == "fail"}
    assert running == {"legacy-web": "inherited", "bare": "recreate-denied", "other": "kept"}
    # An opted-in namespace gets no preview.
    _, out, _ = audit(kube, "table", ("team-a",))
    assert "not opted in" not in out


def test_html_shows_the_denial_the_exemption_and_the_warning(kube: FakeKube) -> None:
    code, out, _ = audit(kube, "html")
    assert code == 1
    assert out.startswith("<!DOCTYPE html>") and "<script" not in out
    assert 'data-object="Pod team-a/agent"><td>Pod team-a/agent</td>' in out  # denied
    assert "exempted by MagTapeException team-a/" in out  # legacy-agent's note
    assert 'data-check="MT1003" data-object="Deployment team-a/web"' in out
    assert "quiet" not in out
