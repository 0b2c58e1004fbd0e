#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/ from code.

Three views, like the original MagTape's: Cluster (how busy MagTape is and
how healthy), Namespaces (which namespaces fail most) and Policies (which
policies fail most); and Audit (what already runs and what each deny level
would deny, from the background audit). They are built with grafana-foundation-sdk so panels are
typed and laid out consistently, and written as importable JSON with a
Prometheus data-source variable (``$datasource``) plus ``$job``,
``$namespace`` and ``$policy`` template variables. Queries use only the
series in app/magtape/metrics.py (docs/observability.md lists them); the
Prometheus test runs every query against a real Prometheus.

Usage:
    hack/dashboards.py            write dashboards/*.json
    hack/dashboards.py --check    exit 1 naming every stale, missing or extra file
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LegendDisplayMode,
    LegendPlacement,
    VizOrientation,
)

from alerts import hooks  # hack/alerts.py: MagTape's webhook names, from base/webhook.yaml

OUT_DIR = Path(__file__).resolve().parent.parent / "dashboards"
TAG = "magtape"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label matchers every query carries, so one Prometheus can hold several
# MagTape deployments (pick them with $job) and the views can be narrowed.
JOB = 'job=~"$job"'
NS = f'{JOB}, namespace=~"$namespace"'
POL = f'{NS}, policy=~"$policy"'

ALLOWED = 'decision="allowed"'
DENIED = 'decision="denied"'
ALERTED = 'alert_sent="true"'
FAILED = 'result="fail"'
PASSED = 'result="pass"'
NOT_2XX = 'code!~"2.."'

REQUESTS = "magtape_admission_requests_total"
EVALUATIONS = "magtape_policy_evaluations_total"
DURATION = "magtape_admission_duration_seconds_bucket"
# The API server's series about MagTape's webhooks (scraped from its /metrics,
# in whatever job; not narrowed by $job).
HOOKS = hooks()
APISERVER_DURATION = "apiserver_admission_webhook_admission_duration_seconds_bucket"
APISERVER_REJECTIONS = "apiserver_admission_webhook_rejection_count"
APISERVER_FAIL_OPEN = "apiserver_admission_webhook_fail_open_count"

Panel = Builder[model.Panel]


# -- variables ---------------------------------------------------------------


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    """A multi-value variable whose "All" is the regex ``.*`` (queries use ``=~``)."""
    return (dashboard.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all"))
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC))


def job_variable() -> dashboard.QueryVariable:
    return query_variable("job", "Job", "label_values(magtape_build_info, job)")


def namespace_variable() -> dashboard.QueryVariable:
    return query_variable("namespace", "Namespace",
                          f"label_values({REQUESTS}{{{JOB}}}, namespace)")


def policy_variable() -> dashboard.QueryVariable:
    return query_variable("policy", "Policy", f"label_values({EVALUATIONS}{{{JOB}}}, policy)")


# -- panels ------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False
           ) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto")
    return query.instant() if instant else query.range()


def stat_panel(title: str, expr: str, description: str, unit: str = "short",
               legend: str = "", text_mode: BigValueTextMode = BigValueTextMode.VALUE,
               width: int = 4) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .with_target(target(expr, legend, instant=True)).unit(unit).span(width).height(4)
            .graph_mode(BigValueGraphMode.NONE).color_mode(BigValueColorMode.VALUE)
            .text_mode(text_mode).no_value("0")
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def series_panel(title: str, description: str, targets: Iterable[tuple[str, str]],
                 unit: str = "short", width: int = 12) -> ts.Panel:
    panel = (ts.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(8).fill_opacity(10).line_width(1)
             .legend(common.VizLegendOptions().show_legend(True)
                     .display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM)))
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(target(expr, legend, ref=chr(ord("A") + i)))
    return panel


def bars_panel(title: str, description: str, expr: str, legend: str,
               width: int = 12) -> bargauge.Panel:
    return (bargauge.Panel().title(title).description(description).datasource(DATASOURCE)
            .with_target(target(expr, legend, instant=True)).span(width).height(8)
            .orientation(VizOrientation.HORIZONTAL).display_mode(BarGaugeDisplayMode.GRADIENT)
            .min(0).unit("short")
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def increase(metric: str, matchers: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(increase({metric}{{{matchers}}}[$__range]))"


def rate(metric: str, matchers: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({metric}{{{matchers}}}[$__rate_interval]))"


def topk(k: int, expr: str) -> str:
    return f"topk({k}, {expr})"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / {denominator}"


def quantile(q: float) -> str:
    return (f"histogram_quantile({q}, sum by (le) "
            f"(rate({DURATION}{{{JOB}}}[$__rate_interval])))")


# -- dashboards --------------------------------------------------------------


def base(title: str, uid: str, description: str) -> dashboard.Dashboard:
    return (dashboard.Dashboard(title).uid(uid).description(description).tags([TAG])
            .editable().refresh("30s").time("now-6h", "now").timezone("browser")
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .link(dashboard.DashboardLink("MagTape").type(model.DashboardLinkType.DASHBOARDS)
                  .tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True))
            .with_variable(datasource_variable())
            .with_variable(job_variable()))


def cluster() -> dashboard.Dashboard:
    d = base("MagTape / Cluster", "magtape-cluster",
             "How busy MagTape is and how healthy: requests, decisions, latency, errors, "
             "notifications and resources.")
    d = (d.with_row(dashboard.Row("Overview"))
         .with_panel(stat_panel("Requests", increase(REQUESTS, JOB),
                                "Admission requests answered in the time range."))
         .with_panel(stat_panel("Allowed", increase(REQUESTS, f"{JOB}, {ALLOWED}"),
                                "Requests allowed (possibly with warnings)."))
         .with_panel(stat_panel("Denied", increase(REQUESTS, f"{JOB}, {DENIED}"),
                                "Requests denied under the deny level."))
         .with_panel(stat_panel("Alerts sent", increase(REQUESTS, f"{JOB}, {ALERTED}"),
                                "Requests for which a Slack alert was queued."))
         .with_panel(stat_panel("Policies loaded", f"max(magtape_policies_loaded{{{JOB}}})",
                                "Policies in the active policy set."))
         .with_panel(stat_panel("Policy load errors",
                                f"max(magtape_policy_load_errors{{{JOB}}})",
                                "Policies left out of the active set by errors; see the "
                                "policy ConfigMaps' kube-mgmt-status annotation.")))
    d = (d.with_row(dashboard.Row("Admission"))
         .with_panel(series_panel("Requests per second", "Admission requests by decision.",
                                  [(rate(REQUESTS, JOB, "decision"), "{{decision}}")], "reqps"))
         .with_panel(series_panel("Latency", "Time to answer an admission request.",
                                  [(quantile(0.5), "p50"), (quantile(0.9), "p90"),
                                   (quantile(0.99), "p99")], "s"))
         .with_panel(series_panel(
             "HTTP error ratio",
             "Share of admission listener responses that were not 2xx (400: malformed "
             "reviews; 5xx: MagTape errors).",
             [(ratio(rate("magtape_http_responses_total", f"{JOB}, {NOT_2XX}"),
                     rate("magtape_http_responses_total", JOB)), "errors")], "percentunit"))
         .with_panel(series_panel(
             "Policy engine errors per second",
             "Requests the engine could not evaluate; answered per "
             "MAGTAPE_ENGINE_FAILURE_POLICY.",
             [(rate("magtape_policy_engine_errors_total", JOB), "errors")], "reqps")))
    d = (d.with_row(dashboard.Row("The API server's view"))
         .with_panel(series_panel(
             "Webhook latency (API server)",
             "How long the API server waits for MagTape's webhooks: MagTape's answer plus "
             "network and TLS. At the webhook's timeoutSeconds (3 s) the call fails.",
             [(f"histogram_quantile({q}, sum by (name, le) (rate({APISERVER_DURATION}"
               f"{{{HOOKS}}}[$__rate_interval])))", f"p{round(q * 100)} {{{{name}}}}")
              for q in (0.5, 0.99)], "s", width=8))
         .with_panel(series_panel(
             "Webhook rejections by error type",
             "Requests the API server refused because of MagTape's webhooks: no_error is a "
             "policy denial; calling_webhook_error means MagTape could not be called "
             "(MagTapeWebhookUnreachable).",
             [(rate(APISERVER_REJECTIONS, HOOKS, "name, error_type"),
               "{{name}} {{error_type}}")], "reqps", width=8))
         .with_panel(series_panel(
             "Admitted unchecked (fail-open)",
             "Requests the API server let through without MagTape because the webhook did not "
             "answer under failurePolicy Ignore (Kubernetes 1.24+; MagTapeFailingOpen).",
             [(rate(APISERVER_FAIL_OPEN, HOOKS, "name"), "{{name}}")], "reqps", width=8)))
    d = (d.with_row(dashboard.Row("Policies and notifications"))
         .with_panel(series_panel("Policy failures per second", "Failed checks by policy.",
                                  [(rate(EVALUATIONS, f"{JOB}, {FAILED}", "policy"),
                                    "{{policy}}")]))
         .with_panel(series_panel("Notifications per second",
                                  "Events and Slack alerts by outcome (sent, failed, dropped, "
                                  "refused, deduplicated).",
                                  [(rate("magtape_notifications_total", JOB,
                                         "channel, outcome"), "{{channel}} {{outcome}}")])))
    d = (d.with_row(dashboard.Row("Process"))
         .with_panel(series_panel("CPU", "CPU used per MagTape process.",
                                  [(f"sum by (instance) (rate(process_cpu_seconds_total"
                                    f"{{{JOB}}}[$__rate_interval]))", "{{instance}}")],
                                  "cores", width=8))
         .with_panel(series_panel("Memory", "Resident memory per MagTape process.",
                                  [(f"sum by (instance) (process_resident_memory_bytes"
                                    f"{{{JOB}}})", "{{instance}}")], "bytes", width=8))
         .with_panel(series_panel("Open file descriptors", "Per MagTape process.",
                                  [(f"sum by (instance) (process_open_fds{{{JOB}}})",
                                    "{{instance}}")], width=8))
         .with_panel(stat_panel("Version", f"count by (version) (magtape_build_info{{{JOB}}})",
                                "MagTape versions running, with the number of processes.",
                                legend="{{version}}",
                                text_mode=BigValueTextMode.VALUE_AND_NAME, width=12))
         .with_panel(stat_panel("Certificate expires in",
                                f"min(magtape_certificate_expiry_timestamp_seconds{{{JOB}}} "
                                f"> 0) - time()",
                                "Time left before the serving certificate expires.",
                                unit="dtdurations", width=12)))
    return d


def namespaces() -> dashboard.Dashboard:
    d = base("MagTape / Namespaces", "magtape-namespaces",
             "Which namespaces fail most: denials, policy failures and alerts per namespace.")
    d = d.with_variable(namespace_variable())
    d = (d.with_row(dashboard.Row("Namespaces failing most"))
         .with_panel(bars_panel("Most denied requests", "Top 10 namespaces by denials.",
                                topk(10, increase(REQUESTS, f"{NS}, {DENIED}", "namespace")),
                                "{{namespace}}"))
         .with_panel(bars_panel("Most policy failures", "Top 10 namespaces by failed checks.",
                                topk(10, increase(EVALUATIONS, f"{NS}, {FAILED}", "namespace")),
                                "{{namespace}}"))
         .with_panel(series_panel("Requests per second", "Admission requests by namespace.",
                                  [(rate(REQUESTS, NS, "namespace"), "{{namespace}}")],
                                  "reqps"))
         .with_panel(series_panel("Denials per second", "Denied requests by namespace.",
                                  [(rate(REQUESTS, f"{NS}, {DENIED}", "namespace"),
                                    "{{namespace}}")], "reqps"))
         .with_panel(series_panel(
             "Failed check ratio", "Share of policy checks that failed, by namespace.",
             [(ratio(rate(EVALUATIONS, f"{NS}, {FAILED}", "namespace"),
                     rate(EVALUATIONS, NS, "namespace")), "{{namespace}}")], "percentunit"))
         .with_panel(series_panel("Alerts per second", "Requests that queued a Slack alert.",
                                  [(rate(REQUESTS, f"{NS}, {ALERTED}", "namespace"),
                                    "{{namespace}}")], "reqps")))
    d = (d.with_row(dashboard.Row("Namespace $namespace").repeat("namespace"))
         .with_panel(stat_panel("Total", increase(REQUESTS, NS), "Requests.", width=6))
         .with_panel(stat_panel("Allowed", increase(REQUESTS, f"{NS}, {ALLOWED}"),
                                "Allowed requests.", width=6))
         .with_panel(stat_panel("Denied", increase(REQUESTS, f"{NS}, {DENIED}"),
                                "Denied requests.", width=6))
         .with_panel(stat_panel("Alerts sent", increase(REQUESTS, f"{NS}, {ALERTED}"),
                                "Requests that queued a Slack alert.", width=6)))
    return d


def policies() -> dashboard.Dashboard:
    d = base("MagTape / Policies", "magtape-policies",
             "Which policies fail most, where, and how often they pass.")
    d = d.with_variable(namespace_variable()).with_variable(policy_variable())
    d = (d.with_row(dashboard.Row("Policies failing most"))
         .with_panel(bars_panel("Most failed policies", "Top 10 policies by failed checks.",
                                topk(10, increase(EVALUATIONS, f"{POL}, {FAILED}", "policy")),
                                "{{policy}}"))
         .with_panel(series_panel("Failures per second", "Failed checks by policy.",
                                  [(rate(EVALUATIONS, f"{POL}, {FAILED}", "policy"),
                                    "{{policy}}")]))
         .with_panel(series_panel(
             "Failed check ratio", "Share of checks that failed, by policy.",
             [(ratio(rate(EVALUATIONS, f"{POL}, {FAILED}", "policy"),
                     rate(EVALUATIONS, POL, "policy")), "{{policy}}")], "percentunit"))
         .with_panel(series_panel("Checks per second", "Checks by policy and result.",
                                  [(rate(EVALUATIONS, POL, "policy, result"),
                                    "{{policy}} {{result}}")])))
    d = (d.with_row(dashboard.Row("Policy $policy").repeat("policy"))
         .with_panel(stat_panel("Checks", increase(EVALUATIONS, POL),
                                "Requests this policy applied to.", width=4))
         .with_panel(stat_panel("Passed", increase(EVALUATIONS, f"{POL}, {PASSED}"),
                                "Checks that passed.", width=4))
         .with_panel(stat_panel("Failed", increase(EVALUATIONS, f"{POL}, {FAILED}"),
                                "Checks that failed.", width=4))
         .with_panel(bars_panel("Namespaces failing it most", "Top 5 namespaces.",
                                topk(5, increase(EVALUATIONS, f"{POL}, {FAILED}", "namespace")),
                                "{{namespace}}")))
    return d


AUDIT_VIOLATIONS = "magtape_audit_violations"
WOULD_DENY = "magtape_audit_would_deny_objects"


def audit_namespace_variable() -> dashboard.QueryVariable:
    return query_variable("namespace", "Namespace",
                          f"label_values({WOULD_DENY}{{{JOB}}}, namespace)")


def audit() -> dashboard.Dashboard:
    """The background audit (docs/audit.md): what already runs, judged as admission would."""
    d = base("MagTape / Audit", "magtape-audit",
             "What already runs in the cluster, judged as admission would judge it now: what "
             "would be denied at each deny level (see the effect of raising "
             "MAGTAPE_DENY_LEVEL before doing so), where, and by which policies.")
    d = d.with_variable(audit_namespace_variable())
    level_stats = [stat_panel(f"Denied at {level}",
                              f'sum({WOULD_DENY}{{{NS}, level="{level}"}})',
                              f"Objects admission would deny if MAGTAPE_DENY_LEVEL were {level} "
                              "(exceptions and overrides applied).", width=6)
                   for level in ("OFF", "LOW", "MED", "HIGH")]
    d = d.with_row(dashboard.Row("What would be denied at each deny level"))
    for panel in level_stats:
        d = d.with_panel(panel)
    d = (d.with_panel(bars_panel("Objects denied by deny level, per namespace",
                                 "Top 10 namespaces by objects denied at HIGH, with every level.",
                                 f"sum by (namespace, level) ({WOULD_DENY}{{{NS}}}) and on "
                                 f"(namespace) topk(10, sum by (namespace) "
                                 f'({WOULD_DENY}{{{NS}, level="HIGH"}}))',
                                 "{{namespace}} at {{level}}", width=24))
         .with_row(dashboard.Row("Failures found"))
         .with_panel(bars_panel("Namespaces with most failures",
                                "Top 10 namespaces by failures (fail and warn results).",
                                topk(10, f"sum by (namespace) ({AUDIT_VIOLATIONS}{{{NS}}})"),
                                "{{namespace}}"))
         .with_panel(bars_panel("Policies failing most", "Top 10 policies by failures.",
                                topk(10, f"sum by (policy, severity) "
                                         f"({AUDIT_VIOLATIONS}{{{NS}}})"),
                                "{{policy}} ({{severity}})"))
         .with_panel(series_panel("Failures by severity", "Failures found by the audit over "
                                  "time, by severity.",
                                  [(f"sum by (severity) ({AUDIT_VIOLATIONS}{{{NS}}})",
                                    "{{severity}}")]))
         .with_panel(series_panel("Objects denied per level over time",
                                  "The four levels side by side.",
                                  [(f"sum by (level) ({WOULD_DENY}{{{NS}}})", "{{level}}")]))
         .with_row(dashboard.Row("Audit health"))
         .with_panel(stat_panel("Since last full pass",
                                f"time() - max(magtape_audit_last_completed_timestamp_seconds"
                                f"{{{JOB}}})", "Age of the last completed full pass.", "s",
                                width=6))
         .with_panel(stat_panel("Last pass took",
                                f"max(magtape_audit_duration_seconds{{{JOB}}})",
                                "Duration of the last completed full pass.", "s", width=6))
         .with_panel(stat_panel("Leaders", f"sum(magtape_audit_leader{{{JOB}}})",
                                "Replicas writing reports: 1 when healthy.", width=6))
         .with_panel(stat_panel("Queue", f"sum(magtape_audit_queue_depth{{{JOB}}})",
                                "Objects waiting to be audited.", width=6)))
    return d


DASHBOARDS = {
    "magtape-audit.json": audit,
    "magtape-cluster.json": cluster,
    "magtape-namespaces.json": namespaces,
    "magtape-policies.json": policies,
}


# -- output ------------------------------------------------------------------


def _number_panels(panels: list[dict[str, Any]], start: int = 1) -> int:
    """Give every panel (rows included) a stable id; Grafana needs them unique."""
    next_id = start
    for panel in panels:
        panel["id"] = next_id
        next_id += 1
        next_id = _number_panels(panel.get("panels", []), next_id)
    return next_id


def render(build: Callable[[], dashboard.Dashboard]) -> str:
    """One dashboard as stable, importable JSON text."""
    doc: dict[str, Any] = json.loads(JSONEncoder().encode(build().build()))
    _number_panels(doc.get("panels", []))
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(build) for name, build in DASHBOARDS.items()}


def check(out_dir: Path) -> list[str]:
    """Problems with the committed files, one line each (empty: up to date)."""
    problems = []
    expected = rendered()
    for name, text in expected.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: stale")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path}: not generated by hack/dashboards.py (remove it)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="fail (exit 1) when dashboards/ differs from the generator")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("dashboards are out of date: run `make dashboards` and commit the result",
                  file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
