"""MagTape's alerting rules on a real Prometheus scraping a real kube-apiserver.

Why it exists: promtool's unit tests (tests/test_alerts.py) prove each rule
against series written by hand; here the series come from the real thing.
Debian's Prometheus scrapes MagTape's metrics port and the e2e kube-apiserver's
/metrics (with a ServiceAccount token whose only right is ``get /metrics``),
with the shipped rules generated at short windows (hack/alerts.py's FAST:
the same expressions, 20 s windows, 2 s ``for:``). Everything is asserted
through Prometheus' HTTP API (/api/v1/alerts), polled with a deadline:

- production's ``failurePolicy: Fail``: stopping MagTape makes requests fail
  and MagTapeWebhookUnreachable (the API server's calling errors) and
  MagTapeDown fire; restarting MagTape resolves both;
- quickstart's ``Ignore``: requests pass unchecked, and MagTape's own target
  going down still raises MagTapeDown;
- a MagTapeException that expires within 7 days raises MagTapeExceptionExpiring
  naming it (MagTape's exception expiry gauge, read from its watch).

The API server is 1.20, which has no ``apiserver_admission_webhook_fail_open_count``
(1.24+): MagTapeFailingOpen is proven by its promtool cases only.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Cluster, service_account_token
from e2e.support import REPO, MagTape, apply
from e2e.test_exceptions_e2e import exception
from e2e.test_webhook import manifest, namespace, wait_denied, warnings
from promsupport import Prometheus
from test_prometheus import MAY_BE_EMPTY, panel_queries, substitute

HOOK = "magtape.webhook.k8s.t-mobile.com"
JOB = "magtape"  # a hand-written scrape job's name, as docs/runbooks/README.md says
DEADLINE = 90.0  # scrape 1 s + window 20 s + for 2 s, on a loaded 2-core machine


def fast_rules(path: Path) -> Path:
    """hack/alerts.py's rules with the e2e timing."""
    spec = importlib.util.spec_from_file_location("magtape_alerts", REPO / "hack" / "alerts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    path.write_text(module.rules_file(module.FAST))
    return path


def metrics_reader(cluster: Cluster) -> str:
    """A ServiceAccount that may read the API server's /metrics and nothing else."""
    apply(cluster, [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "prometheus", "namespace": "monitoring"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "e2e-prometheus"},
         "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "e2e-prometheus"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "e2e-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus",
                       "namespace": "monitoring"}]},
    ])
    return service_account_token(cluster, "monitoring", "prometheus")


@pytest.fixture(scope="module")
def prometheus(magtape: MagTape, cluster: Cluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    token = metrics_reader(cluster)
    status, _ = cluster.request("/metrics", token=token)
    assert status == 200, "the metrics reader's token cannot read /metrics"
    assert cluster.request("/api/v1/secrets", token=token)[0] == 403  # and nothing else
    token_file = workdir / "token"
    token_file.write_text(token)
    scrape = [
        {"job_name": JOB, "static_configs": [
            {"targets": [f"127.0.0.1:{magtape.metrics_port}"],
             "labels": {"namespace": magtape.namespace}}]},
        {"job_name": "apiserver", "scheme": "https",
         "tls_config": {"ca_file": str(cluster.ca_file)},
         "authorization": {"credentials_file": str(token_file)},
         "static_configs": [{"targets": [cluster.server.removeprefix("https://")]}]},
    ]
    prom = Prometheus(workdir, scrape_configs=scrape,
                      rule_files=(fast_rules(workdir / "magtape-alerts.yml"),))
    try:
        prom.wait_for(lambda: prom.targets_up(JOB) and prom.targets_up("apiserver"), DEADLINE,
                      "Prometheus to scrape MagTape and the API server")
        prom.wait_for(lambda: prom.value(
            'count(apiserver_admission_webhook_admission_duration_seconds_count'
            f'{{name="{HOOK}"}})'), DEADLINE, "the API server's metrics of MagTape's webhook")
        yield prom
    finally:
        prom.close()


def set_failure_policy(cluster: Cluster, magtape: MagTape, value: str) -> None:
    cluster.kubectl("patch", "validatingwebhookconfiguration",
                    magtape.webhook["metadata"]["name"], "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/webhooks/0/failurePolicy",
                                 "value": value}]))


def names(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts}


def test_nothing_fires_while_magtape_is_healthy(prometheus: Prometheus) -> None:
    prometheus.wait_for(lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1.0, DEADLINE,
                        "MagTape's target to be up")
    # What a healthy quickstart install settles to: nothing about
    # reachability, latency, the engine or the policies. (MagTapeAbsent may
    # fire for the first seconds: before the first scrape there is no `up`.)
    unhealthy = {"MagTapeWebhookUnreachable", "MagTapeDown", "MagTapeAbsent",
                 "MagTapeAdmissionSlow", "MagTapeWebhookSlow", "MagTapeEngineErrors",
                 "MagTapeNoPoliciesLoaded", "MagTapePoliciesFailingToLoad",
                 "MagTapeCertificateExpiring", "MagTapePolicyErrors"}
    prometheus.wait_for(lambda: not names(prometheus.alerts()) & unhealthy, DEADLINE,
                        f"no alert of {sorted(unhealthy)} firing")
    assert prometheus.value(f'magtape_policies_loaded{{job="{JOB}"}}') > 0
    assert prometheus.value(f'magtape_certificate_expiry_timestamp_seconds{{job="{JOB}"}}') > 0


def test_fail_closed_unreachable_fires_and_resolves(prometheus: Prometheus, magtape: MagTape,
                                                    cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-alert-fail")
    set_failure_policy(cluster, magtape, "Fail")
    magtape.stop()
    refusals: list[str] = []
    try:
        def refused_and_alerting() -> bool:
            # Each refused request adds to the API server's calling-error count.
            attempt = apply(cluster, [manifest("test-deploy01", ns)], "--dry-run=server",
                            check=False)
            if attempt.returncode != 0 and "failed calling webhook" in attempt.stderr:
                refusals.append(attempt.stderr)
            return bool(refusals) and bool(prometheus.firing("MagTapeWebhookUnreachable",
                                                             name=HOOK))

        prometheus.wait_for(refused_and_alerting, DEADLINE,
                            f"requests refused and MagTapeWebhookUnreachable firing "
                            f"({len(refusals)} refusals so far)")
        (alert,) = prometheus.firing("MagTapeWebhookUnreachable", name=HOOK)
        assert alert["labels"]["severity"] == "critical"
        assert HOOK in alert["annotations"]["summary"]
        assert alert["annotations"]["runbook_url"].endswith(
            "/docs/runbooks/MagTapeWebhookUnreachable.md")
        prometheus.wait_for(lambda: prometheus.firing("MagTapeDown", job=JOB), DEADLINE,
                            "MagTapeDown")
    finally:
        magtape.start()
    wait_denied(cluster, manifest("test-deploy02", ns), "(MT2001)")  # enforcing again
    try:
        prometheus.wait_for(lambda: not (names(prometheus.alerts()) & {
            "MagTapeWebhookUnreachable", "MagTapeDown", "MagTapeAbsent"}), DEADLINE,
            "the reachability alerts to resolve after MagTape's restart")
        result = apply(cluster, [manifest("test-deploy01", ns)], "--dry-run=server",
                       check=False)
        assert result.returncode == 0, result.stderr
    finally:
        set_failure_policy(cluster, magtape, "Ignore")


def test_fail_open_still_alerts_on_magtape_down(prometheus: Prometheus, magtape: MagTape,
                                                cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-alert-ignore")
    assert magtape.webhook["webhooks"][0]["failurePolicy"] == "Ignore"  # quickstart
    magtape.stop()
    try:
        # Unchecked: a manifest MagTape would deny passes without a word.
        result = apply(cluster, [manifest("test-deploy02", ns)], "--dry-run=server",
                       check=False)
        assert result.returncode == 0 and warnings(result.stderr) == [], result.stderr
        prometheus.wait_for(lambda: prometheus.firing("MagTapeDown", job=JOB), DEADLINE,
                            "MagTapeDown under failurePolicy Ignore")
        (down,) = prometheus.firing("MagTapeDown", job=JOB)
        assert magtape.namespace in down["annotations"]["summary"]
        # 1.20 counts no calling error under Ignore (and has no fail-open count).
        assert not prometheus.firing("MagTapeWebhookUnreachable")
    finally:
        magtape.start()
    wait_denied(cluster, manifest("test-deploy02", ns), "(MT2001)")
    prometheus.wait_for(lambda: not prometheus.firing("MagTapeDown"), DEADLINE,
                        "MagTapeDown to resolve")


def test_the_api_server_panels_show_magtape(prometheus: Prometheus) -> None:
    """The Cluster dashboard's "API server's view" against a real API server: latency and
    rejections have data; fail-open (1.24+) must still evaluate."""
    panels = [q for q in panel_queries() if q.dashboard == "magtape-cluster.json"
              and q.panel in MAY_BE_EMPTY]
    assert {q.panel for q in panels} == MAY_BE_EMPTY
    for query in panels:
        result = prometheus.query(substitute(query.expr))
        if "fail-open" not in query.panel:
            assert result, f"{query.panel}: no data for {query.expr}"


def test_an_exception_expiring_within_7_days_is_announced(prometheus: Prometheus,
                                                          magtape: MagTape,
                                                          cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-alert-exception")
    now = datetime.now(UTC)
    apply(cluster, [exception("soon", ns, now + timedelta(days=5)),
                    exception("later", ns, now + timedelta(days=30))])
    prometheus.wait_for(lambda: prometheus.firing("MagTapeExceptionExpiring",
                                                  exception_namespace=ns), DEADLINE,
                        "MagTapeExceptionExpiring for the exception that expires in 5 days")
    (alert,) = prometheus.firing("MagTapeExceptionExpiring", exception_namespace=ns)
    assert alert["labels"]["exception_name"] == "soon"
    assert alert["labels"]["severity"] == "info"
    assert alert["annotations"]["summary"].startswith(f"MagTapeException {ns}/soon expires in 4d")
    cluster.kubectl("delete", "magtapeexceptions", "-n", ns, "--all")
