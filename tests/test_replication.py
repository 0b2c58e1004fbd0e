"""Cluster data replication: kube-mgmt layout, MT2002 following Namespace changes, 410, outages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from conftest import admission_app
from fakekube import FakeKube
from informersupport import running_runtime
from magtape.background import Backoff
from magtape.engine.embedded import EmbeddedEngine
from magtape.kube.replication import replicated_kinds
from magtape.kube.rest import ResourceRef
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.policy import DenyLevel
from magtape.review import make_review
from magtape.runtime import Runtime
from magtape.settings import ConfigError, EngineSettings, Settings
from waiting import eventually

RANGE = "k8s.t-mobile.com/nodeportRange"


def namespace(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations or {}}}


def node_port_service(port: int, ns: str = "test1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "port0", "port": 8080, "nodePort": port}]}}


def mt2002(engine: EmbeddedEngine, port: int) -> bool:
    review = make_review(node_port_service(port), "test1")
    return any(v.errcode == "MT2002" for v in engine.evaluate(review).violations)


@pytest.fixture
def running(fake_kube: FakeKube) -> Iterator[tuple[Runtime, EmbeddedEngine]]:
    fake_kube.seed(namespace("test1", {RANGE: "30100,30105"}), namespace("kube-system"))
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    try:
        with running_runtime(Settings(), engine, fake_kube) as runtime:
            assert eventually(lambda: runtime.ready, 20), "runtime never became ready"
            yield runtime, engine
    finally:
        engine.close()


def test_namespaces_are_replicated_in_kube_mgmt_layout(running: tuple[Runtime, Any]) -> None:
    runtime, _ = running
    namespaces = runtime.store.data()["kubernetes"]["namespaces"]
    assert sorted(namespaces) == ["kube-system", "test1"]
    ns = namespaces["test1"]
    assert ns["kind"] == "Namespace" and ns["apiVersion"] == "v1"
    assert ns["metadata"]["annotations"] == {RANGE: "30100,30105"}


def test_namespace_annotation_change_alters_the_mt2002_decision(
        fake_kube: FakeKube, running: tuple[Runtime, EmbeddedEngine]) -> None:
    _, engine = running
    assert mt2002(engine, 30106)
    core = client.CoreV1Api(fake_kube.api_client())
    core.patch_namespace("test1", {"metadata": {"annotations": {RANGE: "30100-30200"}}})
    assert eventually(lambda: not mt2002(engine, 30106), 10), \
        "the annotation change never reached the policy"
    core.patch_namespace("test1", {"metadata": {"annotations": {RANGE: "30100"}}})
    assert eventually(lambda: mt2002(engine, 30106), 10)
    core.delete_namespace("test1")  # no namespace data: no restriction
    assert eventually(lambda: not mt2002(engine, 30106), 10)


def test_watch_ending_with_410_leads_to_a_fresh_list(
        fake_kube: FakeKube, running: tuple[Runtime, EmbeddedEngine]) -> None:
    _, engine = running
    fake_kube.wait_for(lambda: fake_kube.open_watches >= 1, what="the watch")
    fake_kube.fail(500, method="GET", path="/namespaces$", times=1)  # the relist fails once
    fake_kube.end_watches(410)
    # A change made while nobody is watching only arrives through the new list.
    fake_kube.seed(namespace("test1", {RANGE: "na"}))
    assert eventually(lambda: not mt2002(engine, 30106), 10)
    namespace_lists = [r for r in fake_kube.requests_matching("GET", "/api/v1/namespaces$")
                       if not r.is_watch]
    assert len(namespace_lists) >= 3  # first list, the failed relist, the fresh list


def test_clean_watch_end_resumes_without_listing(
        fake_kube: FakeKube, running: tuple[Runtime, EmbeddedEngine]) -> None:
    _, engine = running
    fake_kube.wait_for(lambda: fake_kube.open_watches >= 1, what="the watch")
    lists = len(fake_kube.requests_matching("GET", "/api/v1/namespaces$", watch=False))
    fake_kube.end_watches()
    fake_kube.seed(namespace("test1", {RANGE: "na"}))
    assert eventually(lambda: not mt2002(engine, 30106), 10)
    assert len(fake_kube.requests_matching("GET", "/api/v1/namespaces$", watch=False)) == lists
    resumed = fake_kube.requests_matching("GET", "/api/v1/namespaces$", watch=True)[-1]
    assert resumed.query["resourceVersion"] not in ("", "0")


def test_webhook_keeps_answering_while_the_api_fails(
        fake_kube: FakeKube, running: tuple[Runtime, EmbeddedEngine]) -> None:
    runtime, engine = running
    settings = Settings(deny_level=DenyLevel.MED)  # MT2002 is MED: it denies
    app = admission_app(settings, engine, NullNotifier(), Metrics(CollectorRegistry()),
                     lambda: runtime.ready).test_client()
    fake_kube.fail(500)
    fake_kube.end_watches()  # every reconnect now meets 500s
    fake_kube.wait_for(lambda: len([r for r in fake_kube.requests_matching(
        "GET", "/namespaces$") if not r.is_watch]) >= 3, what="failing relists")
    for port, denied in ((30106, True), (30105, False)):
        body = make_review(node_port_service(port), "test1").raw
        resp = app.post("/", data=body, content_type="application/json")
        assert resp.status_code == 200
        review = json.loads(resp.data)
        assert review["response"]["allowed"] is not denied
        warnings = " ".join(review["response"].get("warnings", []))
        assert ("MT2002" in warnings) is denied
    assert app.get("/readyz").status_code == 200  # the last known state keeps serving
    fake_kube.clear_faults()
    fake_kube.seed(namespace("test1", {RANGE: "na"}))
    assert eventually(lambda: not mt2002(engine, 30106), 10), "never recovered"


def test_other_kinds_are_replicated_by_namespace(fake_kube: FakeKube) -> None:
    fake_kube.seed(node_port_service(30100),
                   {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "d", "namespace": "team-a",
                                 "managedFields": [{"manager": "kubectl"}]},
                    "spec": {}})
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    settings = Settings.from_env({"MAGTAPE_REPLICATE": "v1/services,apps/v1/deployments"})
    try:
        with running_runtime(settings, engine, fake_kube) as runtime:
            assert eventually(lambda: runtime.ready, 20)
            data = runtime.store.data()["kubernetes"]
            assert data["services"]["test1"]["web"]["spec"]["type"] == "NodePort"
            deployment = data["deployments"]["team-a"]["d"]
            assert deployment["kind"] == "Deployment"
            assert "managedFields" not in deployment["metadata"]
            client.CoreV1Api(fake_kube.api_client()).delete_namespaced_service("web", "test1")
            assert eventually(
                lambda: runtime.store.data()["kubernetes"]["services"] == {}, 10)
    finally:
        engine.close()


def test_an_object_nested_too_deeply_is_left_out_and_the_engine_keeps_serving(
        fake_kube: FakeKube) -> None:
    """The engine refuses data nested past its recursion limit: one such object
    (a custom resource's free-form field) must not make every worker refuse the
    cluster data. It is left out; the others stay, listed or watched."""
    deep: Any = "bottom"
    for _ in range(150):
        deep = [deep]
    fake_kube.seed(namespace("test1", {RANGE: "30100,30105"}),
                   {**namespace("deep-listed"), "spec": {"x": deep}})
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    try:
        with running_runtime(Settings(), engine, fake_kube) as runtime:
            assert eventually(lambda: runtime.ready, 20)
            assert sorted(runtime.store.data()["kubernetes"]["namespaces"]) == ["test1"]
            assert mt2002(engine, 30106)
            fake_kube.seed({**namespace("deep-watched"), "spec": {"x": deep}})  # watchers see it
            core = client.CoreV1Api(fake_kube.api_client())
            core.patch_namespace("test1", {"metadata": {"annotations": {RANGE: "30100-30200"}}})
            assert eventually(lambda: not mt2002(engine, 30106), 10), \
                "the change after the deep object never reached the policy"
            assert sorted(runtime.store.data()["kubernetes"]["namespaces"]) == ["test1"]
            assert engine.ready
    finally:
        engine.close()


def test_replicated_data_replaces_the_data_files_section(fake_kube: FakeKube,
                                                        tmp_path: Any) -> None:
    data_file = tmp_path / "ns.json"
    data_file.write_text(json.dumps({"kubernetes": {"namespaces": {
        "test1": {"metadata": {"annotations": {RANGE: "na"}}}}}, "other": {"x": 1}}))
    fake_kube.seed(namespace("test1", {RANGE: "30100"}))
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    settings = Settings(engine=EngineSettings(data_files=(str(data_file),)))
    try:
        with running_runtime(settings, engine, fake_kube) as runtime:
            # Before the first sync the data file answers; afterwards the cluster does.
            assert eventually(lambda: runtime.ready, 20)
            assert mt2002(engine, 30106)
            assert runtime.store.data()["other"] == {"x": 1}
    finally:
        engine.close()


def test_replicate_setting_is_validated() -> None:
    kinds = Settings.from_env({"MAGTAPE_REPLICATE": "v1/services, apps/v1/Deployments"})
    assert replicated_kinds(kinds.cluster.replicate_kinds)[1:] == [
        ResourceRef("v1", "services"), ResourceRef("apps/v1", "deployments")]
    with pytest.raises(ConfigError, match="MAGTAPE_REPLICATE='services' is invalid"):
        Settings.from_env({"MAGTAPE_REPLICATE": "services"})
    with pytest.raises(ConfigError, match="never v1/secrets"):
        Settings.from_env({"MAGTAPE_REPLICATE": "v1/secrets"})


def test_backoff_is_bounded_and_jittered() -> None:
    high = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [high.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    low.reset()
    assert low.next() == 0.25
