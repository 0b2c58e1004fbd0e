"""The metrics and dashboards against a real Prometheus.

A real Prometheus (Debian package, installed by hack/setup.sh) scrapes the
metrics listener served by waitress every second; the test drives admission
traffic through the admission listener, waits until Prometheus has scraped it,
then runs every query of every panel in dashboards/*.json through
Prometheus' HTTP API: each must evaluate, and every panel whose series the
traffic exercises must return data. ``promtool check metrics`` must have
nothing to say about the exposition.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry

from auditsupport import feed_audit_metrics
from conftest import REPO, admission_app, review_doc
from magtape.engine.embedded import EmbeddedEngine
from magtape.kube.certs import certificate_expiry_timestamp
from magtape.metrics import Metrics
from magtape.notify.factory import build_notifier
from magtape.policy import DenyLevel
from magtape.settings import NotifySettings, Settings, SlackSettings
from magtape.web import create_metrics_app
from notifysupport import deployment, label_policies, receiver, serve
from pki import make_tls_files
from promsupport import Prometheus

JOB = "magtape"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval would be at a 1 s scrape interval
RANGE = "10m"
# What Grafana substitutes when "All" is selected (the variables' allValue).
VARIABLES = {"datasource": "prometheus", "job": ".*", "namespace": ".*", "policy": ".*",
             "__rate_interval": RATE_INTERVAL, "__range": RANGE, "__interval": "1s"}
NAMESPACES = ("team-a", "team-b")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def panel_queries() -> list[PanelQuery]:
    out = []
    for path in sorted((REPO / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        panels = list(doc["panels"])
        while panels:
            panel = panels.pop(0)
            panels.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                out.append(PanelQuery(path.name, panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown template variable ${name} in {expr!r}"
        return VARIABLES[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)
    assert "$" not in out
    return out


def as_the_operator_scrapes(target: str) -> dict[str, Any]:
    """The scrape config the Prometheus Operator makes of the shipped ServiceMonitor:
    its target labels (``namespace`` among them: MagTape's own) and its honorLabels."""
    monitor = yaml.safe_load((REPO / "components" / "servicemonitor" / "servicemonitor.yaml")
                             .read_text())
    endpoint = monitor["spec"]["endpoints"][0]
    return {"job_name": JOB, "honor_labels": bool(endpoint.get("honorLabels", False)),
            "metrics_path": endpoint["path"],
            "static_configs": [{"targets": [target], "labels": {
                "namespace": monitor["metadata"]["namespace"], "service": "magtape-svc",
                "pod": "magtape-0", "endpoint": endpoint["port"]}}]}


@dataclass
class Stack:
    admission: str
    metrics: str
    prometheus: Prometheus
    sent: int = 0

    def drive(self) -> None:
        """One round of traffic: allowed, warned, denied in two namespaces, and a bad body."""
        with requests.Session() as s:
            for ns in NAMESPACES:
                for i, labels in enumerate([(), ("fail-low",), ("fail-high",)]):
                    obj = deployment(f"web-{self.sent}-{i}", *labels, namespace=ns)
                    resp = s.post(self.admission + "/", json=review_doc(obj, ns), timeout=10)
                    assert resp.status_code == 200
                    self.sent += 1
            assert s.post(self.admission + "/", data=b"{not json", timeout=10,
                          headers={"Content-Type": "application/json"}).status_code == 400

    def scraped(self) -> bool:
        total = self.prometheus.value(f'sum(magtape_admission_requests_total{{job="{JOB}"}})')
        return total == self.sent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus")
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    metrics = Metrics(CollectorRegistry())
    metrics.observe_load(engine.load(label_policies(), {}))
    feed_audit_metrics(metrics, engine, NAMESPACES)  # the audit dashboard's series
    tls = make_tls_files(workdir)
    metrics.certificate_expiry.set(certificate_expiry_timestamp(tls.cert))
    with receiver() as slack:
        settings = Settings(deny_level=DenyLevel.LOW, notify=NotifySettings(events_enabled=False),
                            slack=SlackSettings(enabled=True, default_url=slack.url()))
        notifier = build_notifier(settings, None, metrics)
        hook_app = admission_app(settings, engine, notifier, metrics)
        metrics_app = create_metrics_app(lambda: engine.ready, settings, metrics)
        with serve(hook_app) as admission, serve(metrics_app, threads=2) as metrics_url:
            # Scraped every 200 ms: the two rounds below each wait for a scrape.
            prometheus = Prometheus(workdir, interval="200ms", scrape_configs=[
                as_the_operator_scrapes(metrics_url.removeprefix("http://"))])
            try:
                stack = Stack(admission, metrics_url, prometheus)
                # Two rounds, each seen by a scrape, so rate() and increase() have
                # samples before and after.
                for _ in range(2):
                    stack.drive()
                    prometheus.wait_for(stack.scraped, 60, "Prometheus to scrape the traffic")
                yield stack
            finally:
                prometheus.close()
                notifier.close(5)
    engine.close()


QUERIES = panel_queries()
# Panels whose series the driven traffic does not produce; they must still evaluate.
# The API server's view: this stack has no API server (the e2e suite checks
# them against a real one: tests/e2e/test_alerts_e2e.py).
MAY_BE_EMPTY: set[str] = {"Webhook latency (API server)", "Webhook rejections by error type",
                          "Admitted unchecked (fail-open)"}


def test_the_dashboards_have_queries() -> None:
    assert {q.dashboard for q in QUERIES} == {"magtape-cluster.json", "magtape-namespaces.json",
                                              "magtape-policies.json", "magtape-audit.json"}
    assert len(QUERIES) > 30


@pytest.mark.slow
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.panel}")
def test_every_panel_query_evaluates_and_has_data(stack: Stack, query: PanelQuery) -> None:
    result = stack.prometheus.query(substitute(query.expr))
    if query.panel not in MAY_BE_EMPTY:
        assert result, f"{query.dashboard} panel {query.panel!r} returned no data: {query.expr}"


@pytest.mark.slow
def test_the_traffic_is_counted_as_driven(stack: Stack) -> None:
    p = stack.prometheus
    by_decision = {r["metric"]["decision"]: float(r["value"][1]) for r in p.query(
        'sum by (decision) (magtape_admission_requests_total{job="magtape"})')}
    assert by_decision == {"allowed": 8.0, "denied": 4.0}  # 2 rounds x 2 namespaces
    # The reviewed objects' namespaces, not MagTape's own (the scrape's target label).
    by_namespace = {r["metric"]["namespace"]: float(r["value"][1]) for r in p.query(
        'sum by (namespace) (magtape_admission_requests_total{job="magtape"})')}
    assert by_namespace == {ns: 6.0 for ns in NAMESPACES}
    assert p.value('magtape_policies_loaded{namespace="magtape-system"}') == 2.0
    failures = {r["metric"]["policy"]: float(r["value"][1]) for r in p.query(
        'sum by (policy) (magtape_policy_evaluations_total{result="fail"})')}
    assert failures == {"liveness-probe": 4.0, "privileged-pod": 4.0}
    assert p.value('sum(magtape_http_responses_total{code="400"})') == 2.0
    assert p.value('magtape_build_info{job="magtape"}') == 1.0
    assert p.value("magtape_policies_loaded") == 2.0
    assert p.value('sum(magtape_admission_requests_total{alert_sent="true"})') == 4.0


def test_promtool_finds_nothing_wrong_with_the_exposition(stack: Stack) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make install` (hack/setup.sh installs it)"
    exposition = requests.get(stack.metrics + "/metrics", timeout=10)
    assert exposition.status_code == 200
    assert b"process_resident_memory_bytes" in exposition.content
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition.content,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout == b"" and checked.stderr == b"", \
        (checked.stdout + checked.stderr).decode()


# -- docs/observability.md ---------------------------------------------------------

DOC = (REPO / "docs/observability.md").read_text()
COMPAT_ROWS = re.findall(r"^\| `(magtape_[a-z_]+(?:\{[^}]*\})?)` \| `([^`]+)` \|$", DOC, re.M)
EXAMPLES = [line for block in re.findall(r"```promql\n(.*?)```", DOC, re.S)
            for line in block.splitlines() if line and not line.startswith("#")]


def test_the_docs_have_compat_queries_and_examples() -> None:
    assert len(COMPAT_ROWS) == 7 and len(EXAMPLES) == 5


@pytest.mark.slow
@pytest.mark.parametrize("original, replacement", COMPAT_ROWS, ids=[r[0] for r in COMPAT_ROWS])
def test_each_documented_replacement_yields_the_original_series(
        stack: Stack, original: str, replacement: str) -> None:
    result = stack.prometheus.query(replacement)
    assert result, replacement
    labels = {frozenset(r["metric"]) for r in result}
    if original.startswith("magtape_requests_total"):
        assert labels == {frozenset({"ns", "alert_sent"})}
        assert {r["metric"]["ns"] for r in result} == set(NAMESPACES)
    elif original.startswith("magtape_policy_total"):
        assert labels == {frozenset({"policy", "ns"})}
        assert {r["metric"]["policy"] for r in result} <= {"policy-liveness-probe",
                                                            "policy-privileged-pod"}
    else:
        assert all("status" in r["metric"] for r in result)


@pytest.mark.slow
@pytest.mark.parametrize("expr", EXAMPLES)
def test_each_documented_example_query_evaluates(stack: Stack, expr: str) -> None:
    stack.prometheus.query(expr.replace("[1d]", "[10m]"))


def test_the_documented_recording_rules_are_valid(tmp_path: Path) -> None:
    (rules,) = re.findall(r"```yaml\n(groups:.*?)```", DOC, re.S)
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    promtool = shutil.which("promtool")
    assert promtool
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
