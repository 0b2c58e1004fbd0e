"""The audit controller against the shared fake API server, with the real engine and Enforcer.

The fake (tests/fakekube.py) stands in for the API server here for what the
e2e suite cannot do quickly: 5,000 failing Pods in one namespace, and the
409 a concurrent writer causes. Objects exist before the controller starts,
as on a cluster adopting MagTape. Every wait polls an observable condition
(the stored report) with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from enforcementsupport import container, deployment, pod
from fakekube import FakeKube, Resource
from informersupport import informers_for
from magtape.audit.controller import AuditController, AuditOptions
from magtape.audit.report import OMITTED, REPORT_NAME, ReportLimits
from magtape.audit.results import Auditor
from magtape.audit.writer import POLICY_REPORTS
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.overrides import parse_config
from magtape.engine.embedded import EmbeddedEngine
from magtape.kube.rest import ResourceRef
from magtape.metrics import AuditMetrics
from magtape.policy import DenyLevel
from magtape.remediation import default_catalogue
from waiting import eventually

OPTED_IN = {"k8s.t-mobile.com/magtape": "enabled"}
PODS, DEPLOYMENTS = ResourceRef("v1", "pods"), ResourceRef("apps/v1", "deployments")


class Source:
    """The shared engine, with generations a test bumps as a policy reload would."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine = engine
        self.generation = 1
        self.data_generation = 0

    @property
    def ready(self) -> bool:
        return self.engine.ready


def register(kube: FakeKube) -> None:
    kube.register(Resource("wgpolicyk8s.io/v1alpha2", "policyreports", "PolicyReport", True))
    kube.register(Resource("coordination.k8s.io/v1", "leases", "Lease", True))


def namespace(name: str, opted_in: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(OPTED_IN) if opted_in else {}}}


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    register(fake_kube)
    return fake_kube


def start(kube: FakeKube, engine: EmbeddedEngine, state: EnforcementState | None = None,
          **options: Any) -> tuple[AuditController, Source, AuditMetrics]:
    source = Source(engine)
    enforcer = Enforcer(state or EnforcementState(), DenyLevel.LOW)
    metrics = AuditMetrics(CollectorRegistry())
    opts = AuditOptions(**{"rate_per_second": 10_000.0, "write_interval_seconds": 0.1,
                           **options})
    informers = informers_for(kube)
    controller = AuditController(informers, [PODS, DEPLOYMENTS],
                                 Auditor(enforcer, engine.evaluate, default_catalogue()),
                                 source, metrics, opts)
    informers.start()
    controller.start()
    return controller, source, metrics


@pytest.fixture
def running() -> Iterator[list[AuditController]]:
    started: list[AuditController] = []
    yield started
    for c in started:
        c.stop()


def counted(metrics: AuditMetrics, counter: str) -> float:
    """The value of one of the audit's counters, as Prometheus scrapes it."""
    value = metrics.registry.get_sample_value(f"magtape_audit_{counter}_total")
    return value or 0.0


def report(kube: FakeKube, ns: str) -> dict[str, Any] | None:
    return kube.get("wgpolicyk8s.io/v1alpha2", "policyreports", REPORT_NAME, ns)


def results_of(kube: FakeKube, ns: str) -> set[tuple[str, str, str]]:
    r = report(kube, ns) or {}
    return {(res["resources"][0]["name"], res["rule"], res["result"])
            for res in r.get("results") or []}


def test_existing_objects_are_reported_and_fixing_one_removes_its_result(
        kube: FakeKube, builtin_engine: EmbeddedEngine,
        running: list[AuditController]) -> None:
    kube.seed(namespace("team-a"), namespace("quiet", opted_in=False),
              pod("agent", container("a", privileged=True)),
              deployment("web", container("a", limits=False)),
              pod("fine"), pod("agent", container("a", privileged=True), namespace="quiet"))
    controller, _, metrics = start(kube, builtin_engine)
    running.append(controller)
    # idle: the report and the metrics of the same flush are both out
    eventually(lambda: controller.idle and results_of(kube, "team-a") == {
        ("agent", "MT2001", "fail"), ("web", "MT1003", "warn")}, 30, "the report of team-a")
    stored = report(kube, "team-a")
    assert stored is not None and stored["summary"]["fail"] == 1
    assert stored["summary"]["pass"] > 10
    assert report(kube, "quiet") is None  # not opted in
    violations, would_deny = metrics.snapshot()
    assert violations[("team-a", "privileged-pod", "high")] == 1
    assert would_deny[("team-a", "LOW")] == 1 and would_deny[("team-a", "HIGH")] == 2

    kube.seed(pod("agent"))  # fixed
    eventually(lambda: results_of(kube, "team-a") == {("web", "MT1003", "warn")}, 30,
               "the fixed Pod's result to go")
    # Opting a namespace in reports it; deleting everything removes the report.
    kube.seed(namespace("quiet"))
    eventually(lambda: results_of(kube, "quiet") == {("agent", "MT2001", "fail")}, 30,
               "the newly opted-in namespace's report")
    kube.delete("v1", "pods", "agent", "quiet")
    eventually(lambda: report(kube, "quiet") is None, 30, "the empty namespace's report to go")


def test_a_status_only_change_is_not_evaluated_and_unchanged_reports_are_not_rewritten(
        kube: FakeKube, builtin_engine: EmbeddedEngine,
        running: list[AuditController]) -> None:
    kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)))
    controller, _, metrics = start(kube, builtin_engine)
    running.append(controller)
    eventually(lambda: controller.idle and results_of(kube, "team-a"), 30, "the first pass")
    evaluations, writes = counted(metrics, "evaluations"), counted(metrics, "report_writes")
    kube.seed({**pod("agent", container("a", privileged=True)), "status": {"phase": "Running"}})
    kube.seed(pod("other"))  # a change that is evaluated, as a marker that events were seen
    eventually(lambda: counted(metrics, "evaluations") == evaluations + 1 and controller.idle,
               30, "the marker Pod to be evaluated")
    # "other" passes: only the summary changed
    assert counted(metrics, "report_writes") == writes + 1


def test_a_policy_or_enforcement_change_re_evaluates_everything(
        kube: FakeKube, builtin_engine: EmbeddedEngine,
        running: list[AuditController]) -> None:
    kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)),
              pod("other", container("b", privileged=True)))
    state = EnforcementState()
    controller, source, metrics = start(kube, builtin_engine, state)
    running.append(controller)
    eventually(lambda: counted(metrics, "passes") == 1 and controller.idle, 30, "the first pass")
    assert counted(metrics, "evaluations") == 2
    source.generation += 1  # the policy set was reloaded
    eventually(lambda: counted(metrics, "passes") == 2 and controller.idle, 30,
               "a second full pass")
    assert counted(metrics, "evaluations") == 4
    # An override (enforce: warn for MT2001) turns every fail into warn, unmodified objects too.
    state.set_config(parse_config("checks:\n  MT2001:\n    enforce: warn\n", "test"))
    eventually(lambda: results_of(kube, "team-a") == {("agent", "MT2001", "warn"),
                                                      ("other", "MT2001", "warn")}, 30,
               "the override to reach the report")


def test_2000_failing_pods_in_one_namespace_stay_under_the_cap(
        kube: FakeKube, builtin_engine: EmbeddedEngine,
        running: list[AuditController]) -> None:
    kube.seed(namespace("big"), *[pod(f"p-{i:04d}", container("a", privileged=True),
                                      namespace="big") for i in range(2000)])
    controller, _, metrics = start(kube, builtin_engine, limits=ReportLimits(max_results=200))
    running.append(controller)
    eventually(lambda: counted(metrics, "passes") == 1 and controller.idle, 240,
               "the pass of 2,000 Pods")
    stored = report(kube, "big")
    assert stored is not None
    assert len(stored["results"]) == 200
    assert stored["summary"]["fail"] == 2000
    assert stored["metadata"]["annotations"][OMITTED] == "1800"
    assert metrics.snapshot()[0][("big", "privileged-pod", "high")] == 2000


def test_a_conflicting_write_is_retried(kube: FakeKube, builtin_engine: EmbeddedEngine,
                                        running: list[AuditController]) -> None:
    kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)))
    kube.fail(409, method="POST", path="/apis/wgpolicyk8s.io/v1alpha2/namespaces/team-a/"
              "policyreports", times=1)
    controller, _, _ = start(kube, builtin_engine)
    running.append(controller)
    eventually(lambda: results_of(kube, "team-a") == {("agent", "MT2001", "fail")}, 30,
               "the report after a conflict")


def test_reports_left_by_a_previous_leader_are_kept_when_unchanged_and_removed_when_stale(
        kube: FakeKube, builtin_engine: EmbeddedEngine,
        running: list[AuditController]) -> None:
    kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)))
    first, _, _ = start(kube, builtin_engine)
    eventually(lambda: first.idle and results_of(kube, "team-a"), 30, "the first report")
    first.stop()
    stale = {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
             "metadata": {"name": REPORT_NAME, "namespace": "gone",
                          "labels": {"app.kubernetes.io/managed-by": "magtape"}},
             "summary": {"pass": 1}, "results": []}
    kube.seed(stale)
    second, _, metrics = start(kube, builtin_engine)
    running.append(second)
    eventually(lambda: counted(metrics, "passes") == 1 and second.idle
               and report(kube, "gone") is None, 30, "the stale report to be deleted")
    # the delete; team-a's report was already right
    assert counted(metrics, "report_writes") == 1
    assert POLICY_REPORTS.plural == "policyreports"
