"""The alerting rules (hack/alerts.py) under promtool, against the metrics, and their runbooks.

- ``promtool check rules`` on the plain rules file and on the PrometheusRule's
  groups;
- ``promtool test rules``: every alert has a case where it fires (labels and the
  rendered summary asserted exactly) and one where it stays silent; the cases
  are the table below, assembled into promtool's test format;
- every series a rule reads is one MagTape exports (read from a live registry,
  not from a list) or a known kube-apiserver series;
- every alert has a runbook (docs/runbooks/<alert>.md; tests/test_runbooks.py
  checks what they say).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from conftest import REPO
from kustomizing import render
from magtape.metrics import AuditMetrics, Metrics

RULES = REPO / "dashboards" / "magtape-alerts.yml"
PROMETHEUS_RULE = REPO / "components" / "prometheusrule" / "prometheusrule.yaml"
RUNBOOKS = REPO / "docs" / "runbooks"

# kube-apiserver series the rules read (k8s.io/apiserver admission metrics):
# the first two exist in the e2e suite's 1.20, fail-open from 1.24.
APISERVER_SERIES = {
    "apiserver_admission_webhook_rejection_count",
    "apiserver_admission_webhook_admission_duration_seconds_bucket",
    "apiserver_admission_webhook_fail_open_count",
}
# Prometheus' own per-target series.
PROMETHEUS_SERIES = {"up"}


def load_generator() -> Any:
    """hack/alerts.py as a module (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location("magtape_alerts", REPO / "hack" / "alerts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rule_docs() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alert_names() -> set[str]:
    return {r["alert"] for r in rule_docs()}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make install` (hack/setup.sh installs it)"
    return found


# -- the generated files --------------------------------------------------------


def test_the_generated_rules_are_committed() -> None:
    result = subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "hack/alerts.py"),
                             "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_prometheusrule_holds_the_same_groups_as_the_rules_file() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_component_renders_the_rule_into_magtape_system(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    def rel(path: str) -> str:  # kustomize takes relative paths only
        return os.path.relpath(REPO / path, overlay)

    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel('overlays/production')}]\n"
        f"components: [{rel('components/servicemonitor')}, {rel('components/prometheusrule')}]\n")
    objects = render(overlay)
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "magtape-system"
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == alert_names()


@pytest.mark.parametrize("path", [RULES, PROMETHEUS_RULE], ids=lambda p: p.name)
def test_promtool_check_rules_is_clean(path: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    plain = tmp_path / "rules.yml"
    plain.write_text(yaml.safe_dump({"groups": doc.get("spec", doc)["groups"]}))
    checked = subprocess.run([promtool(), "check", "rules", str(plain)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_docs())} rules found" in checked.stdout


def test_every_alert_has_severity_summary_and_a_runbook_that_exists() -> None:
    for rule in rule_docs():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/runbooks/{name}.md"), url
        assert (RUNBOOKS / f"{name}.md").is_file(), f"{name} has no docs/runbooks/{name}.md"
    assert {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"} == alert_names()


def test_the_latency_alerts_use_productions_timeout() -> None:
    alerts = load_generator()
    vwc = next(o for o in render(REPO / "overlays/production")
               if o["kind"] == "ValidatingWebhookConfiguration")
    assert {h["timeoutSeconds"] for h in vwc["webhooks"]} == {alerts.TIMEOUT_SECONDS}
    assert {h["name"] for h in vwc["webhooks"]} == set(alerts.webhook_names())


# -- the series the rules read ----------------------------------------------------


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names (inside ``{}`` or a grouping clause) or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_series_in_reads_names_not_labels_or_functions() -> None:
    assert series_in('sum by (name, le) (rate(a_bucket{x="y{z}"}[5m])) > 0.8 and '
                     "b == 1 or time() - c") == {"a_bucket", "b", "c"}


def exported_series() -> set[str]:
    """Every sample name a MagTape metrics registry exposes, the audit's included."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_exceptions(lambda: [("team-a", "legacy", 1.0)])
    metrics.policy_evaluations.add([("pdb", "team-a", "error")])  # series appear when counted
    AuditMetrics(registry)
    return {s.name for family in registry.collect() for s in family.samples}


def test_every_series_a_rule_reads_exists() -> None:
    exported = exported_series()
    assert "magtape_admission_duration_seconds_bucket" in exported  # the reader sees samples
    known = exported | APISERVER_SERIES | PROMETHEUS_SERIES
    used: set[str] = set()
    for rule in rule_docs():
        names = series_in(rule["expr"])
        assert names, rule["expr"]
        assert names <= known, f"{rule['alert']} reads unknown series {names - known}"
        used |= names
    assert used >= APISERVER_SERIES


# -- promtool test rules ------------------------------------------------------------

MAGTAPE = {"job": "magtape-svc", "namespace": "magtape-system", "pod": "magtape-0",
           "instance": "10.0.0.1:9090"}
HOOK = "magtape.webhook.k8s.t-mobile.com"


def series(metric: str, labels: dict[str, str] | None = None, **more: str) -> str:
    merged = {**(MAGTAPE if labels is None else labels), **more}
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in merged.items()) + "}"


def histogram(metric: str, labels: dict[str, str], bounds: tuple[str, ...], filled: str,
              step: int = 10) -> list[tuple[str, str]]:
    """Buckets of a histogram whose every observation falls in the bucket ``filled``."""
    first = bounds.index(filled)
    return [(series(metric, labels, le=b), f"0+{step}x10" if i >= first else "0x10")
            for i, b in enumerate(bounds)]


MAGTAPE_BUCKETS = ("0.1", "1.0", "2.5", "5.0", "+Inf")
APISERVER_BUCKETS = ("0.005", "0.025", "0.1", "0.5", "1.0", "2.5", "+Inf")
APISERVER = {"name": HOOK, "operation": "CREATE", "type": "validating", "rejected": "false"}


@dataclass
class Case:
    """One promtool evaluation: ``fires`` is [(labels, summary)], empty for silent."""

    id: str
    alert: str
    at: str
    inputs: list[tuple[str, str]]
    fires: list[tuple[dict[str, str], str]] = field(default_factory=list)


def labels(severity: str, **extra: str) -> dict[str, str]:
    return {"severity": severity, **extra}


CASES = [
    Case("unreachable: calling errors on MagTape's webhook", "MagTapeWebhookUnreachable", "4m",
         [(series("apiserver_admission_webhook_rejection_count", {},
                  error_type="calling_webhook_error", name=HOOK, operation="CREATE",
                  type="validating", rejection_code="0"), "0 0 3 6 9")],
         [(labels("critical", name=HOOK),
           f"The API server could not call MagTape's webhook {HOOK} 9 times in 5m; under "
           "failurePolicy Fail those requests were refused.")]),
    Case("unreachable: denials, other webhooks' errors and an old count are not",
         "MagTapeWebhookUnreachable", "9m",
         [(series("apiserver_admission_webhook_rejection_count", {}, error_type="no_error",
                  name=HOOK, operation="CREATE", type="validating", rejection_code="400"),
           "0+5x9"),
          (series("apiserver_admission_webhook_rejection_count", {},
                  error_type="calling_webhook_error", name="validation.gatekeeper.sh",
                  operation="CREATE", type="validating", rejection_code="0"), "0+5x9"),
          (series("apiserver_admission_webhook_rejection_count", {},
                  error_type="calling_webhook_error", name=HOOK, operation="CREATE",
                  type="validating", rejection_code="0"), "7x9")]),
    Case("failing open", "MagTapeFailingOpen", "4m",
         [(series("apiserver_admission_webhook_fail_open_count", {}, name=HOOK,
                  type="validating"), "0 0 1 2 2")],
         [(labels("warning", name=HOOK),
           f"The API server admitted 2 requests unchecked in 5m because MagTape's webhook "
           f"{HOOK} did not answer.")]),
    # The API server's counters appear at their first failure: a burst that creates
    # the series and stops has no increase() but must still be seen.
    Case("failing open: a first burst creates the series", "MagTapeFailingOpen", "4m",
         [(series("apiserver_admission_webhook_fail_open_count", {}, name=HOOK,
                  type="validating"), "_ _ 12 12 12")],
         [(labels("warning", name=HOOK),
           f"The API server admitted 12 requests unchecked in 5m because MagTape's webhook "
           f"{HOOK} did not answer.")]),
    Case("failing open: an old count and other webhooks are not", "MagTapeFailingOpen", "9m",
         [(series("apiserver_admission_webhook_fail_open_count", {}, name=HOOK,
                  type="validating"), "5x9"),
          (series("apiserver_admission_webhook_fail_open_count", {}, name="other.example.com",
                  type="validating"), "0+1x9")]),
    Case("down", "MagTapeDown", "3m", [(series("up"), "0x5")],
         [(labels("critical", **MAGTAPE),
           "MagTape magtape-system/magtape-0 (10.0.0.1:9090) does not answer Prometheus' "
           "scrapes.")]),
    Case("down: not before 1m, and not other jobs", "MagTapeDown", "30s",
         [(series("up"), "1 0 0"), (series("up", {"job": "other"}), "0x5")]),
    Case("absent: no MagTape target is up", "MagTapeAbsent", "3m",
         [(series("up", {"job": "kube-apiserver"}), "1x5")],
         [(labels("critical"),
           "No MagTape replica is up: no scrape target of job magtape/magtape-svc answers.")]),
    Case("absent: one replica of two is enough", "MagTapeAbsent", "3m",
         [(series("up"), "1x5"), (series("up", pod="magtape-1"), "0x5")]),
    Case("admission slow", "MagTapeAdmissionSlow", "5m",
         histogram("magtape_admission_duration_seconds_bucket", MAGTAPE, MAGTAPE_BUCKETS,
                   "5.0"),
         [(labels("warning", job="magtape-svc", namespace="magtape-system"),
           "MagTape in magtape-system takes 4.975s (p99) to answer; the webhook times out "
           "at 3s.")]),
    Case("admission fast", "MagTapeAdmissionSlow", "5m",
         histogram("magtape_admission_duration_seconds_bucket", MAGTAPE, MAGTAPE_BUCKETS,
                   "0.1")),
    Case("webhook slow (the API server's view)", "MagTapeWebhookSlow", "5m",
         histogram("apiserver_admission_webhook_admission_duration_seconds_bucket", APISERVER,
                   APISERVER_BUCKETS, "+Inf"),
         [(labels("warning", name=HOOK),
           f"The API server waits 2.5s (p99) for MagTape's webhook {HOOK}; it gives up at "
           "3s.")]),
    Case("webhook fast", "MagTapeWebhookSlow", "5m",
         histogram("apiserver_admission_webhook_admission_duration_seconds_bucket", APISERVER,
                   APISERVER_BUCKETS, "0.025")),
    Case("engine errors", "MagTapeEngineErrors", "4m",
         [(series("magtape_policy_engine_errors_total", reason="unavailable"), "0 0 1 1 1")],
         [(labels("warning", job="magtape-svc", namespace="magtape-system",
                  reason="unavailable"),
           "MagTape in magtape-system could not evaluate policies (unavailable).")]),
    Case("engine errors: worker replacements are their own alert", "MagTapeEngineErrors", "4m",
         [(series("magtape_policy_engine_errors_total", reason="timeout"), "0 1 2 3 4"),
          (series("magtape_policy_engine_errors_total", reason="error"), "3x4")]),
    Case("workers replaced", "MagTapeEngineWorkersReplaced", "4m",
         [(series("magtape_policy_engine_errors_total", reason="crash"), "0 1 2 3 4")],
         [(labels("warning", job="magtape-svc", namespace="magtape-system", reason="crash"),
           "MagTape in magtape-system keeps replacing policy engine workers (crash).")]),
    Case("workers replaced: one or two are not", "MagTapeEngineWorkersReplaced", "4m",
         [(series("magtape_policy_engine_errors_total", reason="memory"), "0 0 0 1 1"),
          (series("magtape_policy_engine_errors_total", reason="unavailable"), "0 5 10 15 20")]),
    Case("policies failing to load", "MagTapePoliciesFailingToLoad", "3m",
         [(series("magtape_policy_load_errors"), "2x5")],
         [(labels("warning", job="magtape-svc", namespace="magtape-system"),
           "2 MagTape policies in magtape-system failed to load and are not enforced.")]),
    Case("policies load", "MagTapePoliciesFailingToLoad", "3m",
         [(series("magtape_policy_load_errors"), "0x5"),
          (series("magtape_policy_load_errors", pod="magtape-1"), "0 1 0 0 0")]),
    Case("no policies loaded", "MagTapeNoPoliciesLoaded", "3m",
         [(series("magtape_policies_loaded"), "0x5")],
         [(labels("critical", job="magtape-svc", namespace="magtape-system"),
           "MagTape in magtape-system has no policy loaded: nothing is checked.")]),
    Case("policies loaded", "MagTapeNoPoliciesLoaded", "3m",
         [(series("magtape_policies_loaded"), "13x5")]),
    Case("policy errors, the first creating the series", "MagTapePolicyErrors", "4m",
         [(series("magtape_policy_evaluations_total", policy="host-port", result="error"),
           "_ _ 1 1 1"),
          (series("magtape_policy_evaluations_total", policy="pdb", result="error"),
           "0 2 4 6 8")],
         [(labels("warning", job="magtape-svc", policy="host-port"),
           "MagTape policy host-port failed to evaluate on 1 requests in 5m."),
          (labels("warning", job="magtape-svc", policy="pdb"),
           "MagTape policy pdb failed to evaluate on 8 requests in 5m.")]),
    Case("policy failures are not policy errors, nor is an old error count",
         "MagTapePolicyErrors", "9m",
         [(series("magtape_policy_evaluations_total", policy="pdb", result="fail"), "0+3x9"),
          (series("magtape_policy_evaluations_total", policy="host-port", result="error"),
           "2x9")]),
    Case("certificate expires in 2 days: warning and critical", "MagTapeCertificateExpiring",
         "20m", [(series("magtape_certificate_expiry_timestamp_seconds"), "172800x30")],
         [(labels(sev, job="magtape-svc", namespace="magtape-system"),
           "MagTape's serving certificate in magtape-system expires in 1d 23h 40m 0s.")
          for sev in ("warning", "critical")]),
    Case("certificate expires in 10 days: warning", "MagTapeCertificateExpiring", "20m",
         [(series("magtape_certificate_expiry_timestamp_seconds"), "864000x30")],
         [(labels("warning", job="magtape-svc", namespace="magtape-system"),
           "MagTape's serving certificate in magtape-system expires in 9d 23h 40m 0s.")]),
    Case("certificate good for 30 days, or none configured (0)", "MagTapeCertificateExpiring",
         "20m", [(series("magtape_certificate_expiry_timestamp_seconds"), "2592000x30"),
                 (series("magtape_certificate_expiry_timestamp_seconds", pod="local"),
                  "0x30")]),
    Case("audit stale: the leader completed nothing in 3 intervals", "MagTapeAuditStale", "7m",
         [(series("magtape_audit_leader"), "1x10"),
          (series("magtape_audit_interval_seconds"), "60x10"),
          (series("magtape_audit_leading_since_timestamp_seconds"), "60x10"),
          (series("magtape_audit_last_completed_timestamp_seconds"), "0x10")],
         [(labels("warning", **MAGTAPE),
           "MagTape's audit in magtape-system completed no pass in three intervals.")]),
    Case("audit fresh; a new leader gets 3 intervals; followers never alert",
         "MagTapeAuditStale", "7m",
         [(series("magtape_audit_leader"), "1x10"),
          (series("magtape_audit_interval_seconds"), "60x10"),
          (series("magtape_audit_leading_since_timestamp_seconds"), "60x10"),
          (series("magtape_audit_last_completed_timestamp_seconds"), "0+60x10"),
          (series("magtape_audit_leader", pod="magtape-1"), "1x10"),
          (series("magtape_audit_interval_seconds", pod="magtape-1"), "60x10"),
          (series("magtape_audit_leading_since_timestamp_seconds", pod="magtape-1"), "300x10"),
          (series("magtape_audit_last_completed_timestamp_seconds", pod="magtape-1"), "0x10"),
          (series("magtape_audit_leader", pod="magtape-2"), "0x10"),
          (series("magtape_audit_interval_seconds", pod="magtape-2"), "60x10"),
          (series("magtape_audit_leading_since_timestamp_seconds", pod="magtape-2"), "0x10"),
          (series("magtape_audit_last_completed_timestamp_seconds", pod="magtape-2"), "0x10")]),
    Case("notifications failing", "MagTapeNotificationsFailing", "6m",
         [(series("magtape_notifications_total", channel="slack", outcome="failed"),
           "0 0 2 4 6 8 10")],
         [(labels("warning", job="magtape-svc", namespace="magtape-system", channel="slack"),
           "MagTape in magtape-system failed to send or dropped 10 slack notifications in "
           "5m.")]),
    Case("notifications sent", "MagTapeNotificationsFailing", "6m",
         [(series("magtape_notifications_total", channel="event", outcome="sent"),
           "0 5 10 15 20 25 30"),
          (series("magtape_notifications_total", channel="event", outcome="failed"), "3x6")]),
    Case("exception expires in 5 days", "MagTapeExceptionExpiring", "0m",
         [(series("magtape_exception_expiry_timestamp_seconds", exception_namespace="team-a",
                  exception_name="legacy-hostpath"), "432000")],
         [(labels("info", exception_namespace="team-a", exception_name="legacy-hostpath"),
           "MagTapeException team-a/legacy-hostpath expires in 5d 0h 0m 0s.")]),
    Case("exception good for 30 days", "MagTapeExceptionExpiring", "0m",
         [(series("magtape_exception_expiry_timestamp_seconds", exception_namespace="team-a",
                  exception_name="legacy-hostpath"), "2592000")]),
]


def expected_alert(alert: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
    (rule,) = [r for r in rule_docs()
               if r["alert"] == alert and r["labels"]["severity"] == labels["severity"]]
    return {"exp_labels": labels,
            "exp_annotations": {"summary": summary,
                                "description": rule["annotations"]["description"],
                                "runbook_url": rule["annotations"]["runbook_url"]}}


def promtool_tests(cases: list[Case]) -> dict[str, Any]:
    return {"rule_files": [str(RULES)], "evaluation_interval": "30s", "tests": [
        {"name": c.id, "interval": "1m",
         "input_series": [{"series": s, "values": v} for s, v in c.inputs],
         "alert_rule_test": [{"eval_time": c.at, "alertname": c.alert,
                              "exp_alerts": [expected_alert(c.alert, lab, summary)
                                             for lab, summary in c.fires]}]}
        for c in cases]}


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing = {c.alert for c in CASES if c.fires}
    silent = {c.alert for c in CASES if not c.fires}
    assert firing == silent == alert_names()
    severities = {(c.alert, lab["severity"]) for c in CASES for lab, _ in c.fires}
    assert severities == {(r["alert"], r["labels"]["severity"]) for r in rule_docs()}


def test_promtool_test_rules_passes(tmp_path: Path) -> None:
    tests = tmp_path / "magtape-alerts.test.yml"
    tests.write_text(yaml.safe_dump(promtool_tests(CASES), sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """A case turned around (silent expected where the rule fires) is caught."""
    firing = [c for c in CASES if c.fires]
    turned = [Case(c.id, c.alert, c.at, c.inputs) for c in firing]
    tests = tmp_path / "turned.test.yml"
    tests.write_text(yaml.safe_dump(promtool_tests(turned), sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == alert_names()
