"""The metric series, the generated dashboards and the ServiceMonitor component.

What Prometheus does with them is tests/test_prometheus.py; here: names and
labels as documented, dashboards that are up to date, well-formed and query
only series MagTape exports, and a ServiceMonitor that selects the Service's
metrics port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import REPO
from kustomizing import render
from magtape.metrics import (
    DURATION_BUCKETS,
    NOTIFY_CHANNELS,
    NOTIFY_OUTCOMES,
    AuditMetrics,
    Metrics,
)
from magtape.policy import (
    Evaluation,
    LoadReport,
    PolicyInfo,
    PolicyLoadError,
    PolicyResult,
    Severity,
    Violation,
)

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))


def exercised() -> Metrics:
    """Metrics with every labelled series touched once."""
    m = Metrics(CollectorRegistry())
    fail = Violation("[FAIL] HIGH - x (MT2001)", "privileged-pod", Severity.HIGH, "MT2001")
    evaluation = Evaluation((PolicyResult("liveness-probe", ()),
                             PolicyResult("privileged-pod", (fail,))))
    m.observe_admission("team-a", False, True, evaluation, 0.004)
    m.observe_admission("team-b", True, False, None, 0.002)
    m.http_responses.labels("200").inc()
    audit = AuditMetrics(m.registry)  # the background audit's series (docs/audit.md)
    audit.set_findings({("team-a", "privileged-pod", "high"): 1}, {("team-a", "LOW"): 1})
    return m


def sample_names(m: Metrics) -> set[str]:
    text = generate_latest(m.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# -- series ------------------------------------------------------------------------


def test_the_documented_series_are_exported() -> None:
    names = sample_names(exercised())
    for name in ["magtape_admission_requests_total", "magtape_policy_evaluations_total",
                 "magtape_admission_duration_seconds_bucket",
                 "magtape_policy_engine_errors_total", "magtape_notifications_total",
                 "magtape_policies_loaded", "magtape_policy_load_errors", "magtape_build_info",
                 "magtape_http_responses_total", "magtape_certificate_expiry_timestamp_seconds",
                 "process_cpu_seconds_total", "process_resident_memory_bytes"]:
        assert name in names, name


def test_admissions_are_counted_by_namespace_decision_and_alert() -> None:
    m = exercised()
    assert value(m, "magtape_admission_requests_total", namespace="team-a", decision="denied",
                 alert_sent="true") == 1
    assert value(m, "magtape_admission_requests_total", namespace="team-b", decision="allowed",
                 alert_sent="false") == 1
    assert value(m, "magtape_policy_evaluations_total", policy="privileged-pod",
                 namespace="team-a", result="fail") == 1
    assert value(m, "magtape_policy_evaluations_total", policy="liveness-probe",
                 namespace="team-a", result="pass") == 1
    assert value(m, "magtape_admission_duration_seconds_count") == 2


def test_duration_buckets_span_1ms_to_10s() -> None:
    assert DURATION_BUCKETS[0] == 0.001 and DURATION_BUCKETS[-1] == 10.0
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_every_notification_series_exists_from_the_start() -> None:
    m = Metrics(CollectorRegistry())
    for channel in NOTIFY_CHANNELS:
        for outcome in NOTIFY_OUTCOMES:
            assert value(m, "magtape_notifications_total", channel=channel,
                         outcome=outcome) == 0
    assert set(NOTIFY_CHANNELS) == {"slack", "event"}
    assert set(NOTIFY_OUTCOMES) == {"sent", "failed", "dropped", "refused", "deduplicated"}


def test_load_reports_set_the_gauges() -> None:
    m = Metrics(CollectorRegistry())
    info = PolicyInfo("liveness-probe", Severity.LOW, "MT1001", frozenset({"Pod"}),
                      "kubernetes.admission.liveness_probe", "policies/liveness-probe")
    errors = (PolicyLoadError("cm a", "a.rego", "bad", policy="a"),
              PolicyLoadError("cm a", "a2.rego", "bad", policy="a"),
              PolicyLoadError("cm b", "b.rego", "bad"))
    m.observe_load(LoadReport(1, (info,), errors))
    assert value(m, "magtape_policies_loaded") == 1
    assert value(m, "magtape_policy_load_errors") == 2  # per policy, not per message


def test_build_info_carries_the_version() -> None:
    from magtape import __version__

    assert value(Metrics(CollectorRegistry()), "magtape_build_info", version=__version__) == 1


def test_registries_are_isolated() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.engine_errors.labels("timeout").inc()
    assert value(a, "magtape_policy_engine_errors_total", reason="timeout") == 1
    assert value(b, "magtape_policy_engine_errors_total", reason="timeout") == 0


# -- dashboards ----------------------------------------------------------------------


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "hack/dashboards.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_committed_dashboards_are_up_to_date() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stderr


def test_the_check_names_stale_missing_and_extra_files(tmp_path: Path) -> None:
    for path in DASHBOARDS:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "magtape-cluster.json").write_text("{}\n")
    (tmp_path / "magtape-policies.json").unlink()
    (tmp_path / "hand-made.json").write_text("{}\n")
    result = run_generator("--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'magtape-cluster.json'}: stale" in result.stderr
    assert f"{tmp_path / 'magtape-policies.json'}: missing" in result.stderr
    assert f"{tmp_path / 'hand-made.json'}: not generated" in result.stderr
    assert "magtape-namespaces.json" not in result.stderr
    assert "make dashboards" in result.stderr


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out, queue = [], list(doc["panels"])
    while queue:
        panel = queue.pop(0)
        out.append(panel)
        queue.extend(panel.get("panels", []))
    return out


def test_three_views_with_the_template_variables() -> None:
    docs = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}
    assert set(docs) == {"magtape-cluster.json", "magtape-namespaces.json",
                         "magtape-policies.json", "magtape-audit.json"}
    variables = {name: [v["name"] for v in d["templating"]["list"]] for name, d in docs.items()}
    assert variables == {"magtape-audit.json": ["datasource", "job", "namespace"],
                         "magtape-cluster.json": ["datasource", "job"],
                         "magtape-namespaces.json": ["datasource", "job", "namespace"],
                         "magtape-policies.json": ["datasource", "job", "namespace", "policy"]}
    for doc in docs.values():
        (ds,) = [v for v in doc["templating"]["list"] if v["name"] == "datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert len({d["uid"] for d in docs.values()}) == 4


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_grafana_json(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["schemaVersion"] >= 39 and doc["uid"] and doc["title"].startswith("MagTape")
    assert "id" not in doc  # Grafana assigns it on import
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    for panel in panels(doc):
        assert panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(refs)


def test_dashboards_query_only_series_magtape_exports() -> None:
    exported = sample_names(exercised())
    used = set()
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                used |= set(re.findall(r"\b((?:magtape|process)_[a-z_]+)", target["expr"]))
        for variable in json.loads(path.read_text())["templating"]["list"]:
            used |= set(re.findall(r"\b(magtape_[a-z_]+)", str(variable.get("query", ""))))
    assert used, "no series found in the dashboards"
    assert used - exported == set()


# -- ServiceMonitor ------------------------------------------------------------------


def test_servicemonitor_component_selects_the_metrics_port(tmp_path: Path) -> None:
    """Render base + the component from an overlay, as a user would, and match them up."""
    shutil.copytree(REPO / "base", tmp_path / "base")
    shutil.copytree(REPO / "components/servicemonitor", tmp_path / "components/servicemonitor")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay/kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "namespace: monitoring-test\n"
        "resources:\n  - ../base\ncomponents:\n  - ../components/servicemonitor\n")
    docs = render(tmp_path / "overlay")
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] ==
                  "magtape-svc"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == \
        "monitoring-test"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports[endpoint["port"]] == 9090 and endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"


def test_exception_expiry_exports_the_soonest_exceptions_bounded() -> None:
    from magtape.metrics import EXCEPTION_EXPIRY_SERIES

    registry = CollectorRegistry()
    in_force = [("team-a", f"ex-{i}", 1_000_000.0 + i) for i in range(EXCEPTION_EXPIRY_SERIES + 50)]
    Metrics(registry).watch_exceptions(lambda: reversed(in_force))
    samples = [s for f in registry.collect() for s in f.samples
               if s.name == "magtape_exception_expiry_timestamp_seconds"]
    assert len(samples) == EXCEPTION_EXPIRY_SERIES
    assert {s.labels["exception_name"] for s in samples} == {
        f"ex-{i}" for i in range(EXCEPTION_EXPIRY_SERIES)}  # the soonest to expire
    assert samples[0].labels == {"exception_namespace": "team-a", "exception_name": "ex-0"}
    assert samples[0].value == 1_000_000.0
