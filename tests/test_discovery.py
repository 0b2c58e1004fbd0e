"""Policy discovery from ConfigMaps: hot reload, status annotations, built-ins until synced.

The runtime runs for real (reflector threads, the policy store's worker, the
embedded engine) against the fake API server; the tests wait on
conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import CollectorRegistry

from fakekube import FakeKube
from informersupport import informers_for, running_runtime
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_policy_dir, is_test_module
from magtape.kube.discovery import STATUS_ANNOTATION
from magtape.kube.informers import Informers
from magtape.metrics import Metrics
from magtape.review import make_review
from magtape.runtime import Runtime, start
from magtape.settings import ClusterSettings, EngineKind, EngineSettings, IdentitySettings, Settings
from waiting import eventually

NS = "magtape-system"
SETTINGS = Settings(identity=IdentitySettings(namespace=NS),
                    cluster=ClusterSettings(policy_discovery=True))

NO_LATEST = """package kubernetes.admission.no_latest_tag

import rego.v1

policy_metadata := {"name": "no-latest-tag", "severity": "HIGH", "errcode": "MT9001",
  "targets": {"Pod"}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains {"name": policy_metadata.name, "severity": "HIGH", "errcode": "MT9001",
  "msg": concat("", ["[FAIL] HIGH - image ", c.image, " uses latest (MT9001)"])} if {
  matches
  some c in input.request.object.spec.containers
  endswith(c.image, ":latest")
}
"""

# Line 6 is broken; FIXED is the same policy without the error.
FIXED = NO_LATEST.replace("no_latest_tag", "other").replace("no-latest-tag", "other")
_lines = FIXED.splitlines(keepends=True)
BROKEN = "".join([*_lines[:4], 'extra contains msg if {\n', '  msg := "x" +\n', '}\n',
                  *_lines[4:]])


def policy_configmap(name: str, files: dict[str, str], ns: str = NS,
                     labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns,
                         "labels": labels or {"openpolicyagent.org/policy": "rego"}},
            "data": files}


def builtin_configmaps(*folders: str) -> list[dict[str, Any]]:
    """The built-in policies as the distribution ships them: one ConfigMap per folder."""
    out = []
    root = builtin_policy_dir()
    for folder in folders:
        files = {f.name: f.read_text() for f in sorted((root / folder).glob("*.rego"))
                 if not is_test_module(f.name)}
        out.append(policy_configmap(f"magtape-policy-{folder}", files))
    return out


def load_sample(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


PRIVILEGED = load_sample(builtin_policy_dir() / "privileged-pod/samples/"
                         "denied-privileged-container.yaml")[0]
LATEST_POD = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "p", "namespace": "team-a",
                           "ownerReferences": [{"kind": "ReplicaSet", "name": "r",
                                                "apiVersion": "apps/v1", "uid": "1"}]},
              "spec": {"containers": [{"name": "c", "image": "nginx:latest"}]}}


def errcodes(engine: EmbeddedEngine, obj: dict[str, Any]) -> set[str]:
    return {v.errcode for v in engine.evaluate(make_review(obj, "team-a")).violations}


def status_of(kube: FakeKube, name: str) -> Any:
    cm = kube.get("v1", "configmaps", name, NS)
    if cm is None:
        return None
    text = (cm["metadata"].get("annotations") or {}).get(STATUS_ANNOTATION)
    return json.loads(text) if text else None


RuntimeFactory = Callable[..., tuple[Runtime, EmbeddedEngine]]


@pytest.fixture
def make_runtime(fake_kube: FakeKube) -> Iterator[RuntimeFactory]:
    started: list[tuple[Runtime, EmbeddedEngine, Informers]] = []

    def factory(settings: Settings = SETTINGS) -> tuple[Runtime, EmbeddedEngine]:
        engine = EmbeddedEngine(timeout_seconds=10, workers=2)
        informers = informers_for(fake_kube)
        runtime = start(settings, engine, informers, Metrics(CollectorRegistry()))
        informers.start()
        started.append((runtime, engine, informers))
        return runtime, engine

    yield factory
    for runtime, engine, informers in started:
        informers.stop()
        runtime.stop()
        engine.close()


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                   *builtin_configmaps("lib", "privileged-pod"))
    return fake_kube


def wait_ready(runtime: Runtime, timeout: float = 20.0) -> None:
    assert eventually(lambda: runtime.ready, timeout), "runtime never became ready"


def test_discovered_configmaps_are_the_policy_set(kube: FakeKube,
                                                  make_runtime: RuntimeFactory) -> None:
    runtime, engine = make_runtime()
    wait_ready(runtime)
    report = runtime.store.last_report
    assert report is not None
    assert [p.name for p in report.policies] == ["privileged-pod"]  # the built-ins are gone
    assert errcodes(engine, PRIVILEGED) == {"MT2001"}
    kube.wait_for(lambda: status_of(kube, "magtape-policy-privileged-pod") == {"status": "ok"}
                  and status_of(kube, "magtape-policy-lib") == {"status": "ok"},
                  what="status ok on both ConfigMaps")
    # ConfigMaps without the label, or elsewhere, are not policies.
    assert kube.requests_matching("GET", f"/namespaces/{NS}/configmaps$")[0].query[
        "labelSelector"] == "openpolicyagent.org/policy=rego"


def test_new_policy_configmap_is_enforced_without_restart(kube: FakeKube,
                                                          make_runtime: RuntimeFactory) -> None:
    runtime, engine = make_runtime()
    wait_ready(runtime)
    assert "MT9001" not in errcodes(engine, LATEST_POD)
    version = runtime.store.last_report.version if runtime.store.last_report else 0

    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(
        NS, policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
    kube.wait_for(lambda: status_of(kube, "no-latest") == {"status": "ok"}, timeout=10,
                  what="status ok on the new ConfigMap")
    assert "MT9001" in errcodes(engine, LATEST_POD)
    assert errcodes(engine, PRIVILEGED) == {"MT2001"}  # the others keep enforcing
    assert runtime.store.last_report is not None and runtime.store.last_report.version > version


def test_syntax_error_gets_an_error_status_with_the_line(kube: FakeKube,
                                                         make_runtime: RuntimeFactory) -> None:
    kube.seed(policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
    runtime, engine = make_runtime()
    wait_ready(runtime)
    kube.seed(policy_configmap("broken", {"policy.rego": BROKEN}))

    status = kube.wait_for(lambda: status_of(kube, "broken"), timeout=10,
                           what="a status on the broken ConfigMap")
    assert status["status"] == "error"
    assert status["error"].startswith("broken/policy.rego:6: "), status
    # Every other policy keeps enforcing, and keeps its ok status.
    assert errcodes(engine, PRIVILEGED) == {"MT2001"}
    assert "MT9001" in errcodes(engine, LATEST_POD)
    assert status_of(kube, "no-latest") == {"status": "ok"}

    # Fixing it turns the status back to ok.
    kube.seed(policy_configmap("broken", {"policy.rego": FIXED}))
    kube.wait_for(lambda: status_of(kube, "broken") == {"status": "ok"}, timeout=10,
                  what="status ok after the fix")


def test_deleted_configmap_stops_enforcing(kube: FakeKube,
                                           make_runtime: RuntimeFactory) -> None:
    kube.seed(policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
    runtime, engine = make_runtime()
    wait_ready(runtime)
    assert "MT9001" in errcodes(engine, LATEST_POD)
    kube.delete("v1", "configmaps", "no-latest", NS)
    assert eventually(lambda: "MT9001" not in errcodes(engine, LATEST_POD), 10)


def test_status_is_written_once_and_does_not_reload(kube: FakeKube,
                                                    make_runtime: RuntimeFactory) -> None:
    runtime, _ = make_runtime()
    wait_ready(runtime)
    kube.wait_for(lambda: status_of(kube, "magtape-policy-privileged-pod"), what="a status")
    version = runtime.store.last_report.version if runtime.store.last_report else 0
    # Touch an unrelated annotation: no status write, no reload.
    kube.requests.clear()
    kube.seed({**builtin_configmaps("privileged-pod")[0],
               "metadata": {**kube.get("v1", "configmaps", "magtape-policy-privileged-pod",
                                       NS)["metadata"],  # type: ignore[index]
                            "annotations": {
                                STATUS_ANNOTATION: '{"status": "ok"}', "team": "x"}}})
    # Wait for the watch to deliver the change, then for the store to be idle.
    assert eventually(
        lambda: runtime.store.loaded_generation >= runtime.store.generation, 5)
    assert runtime.store.last_report is not None and runtime.store.last_report.version == version
    assert kube.requests_matching("PATCH") == []


def test_several_replicas_agree_on_the_status(kube: FakeKube,
                                              make_runtime: RuntimeFactory) -> None:
    replicas = [make_runtime() for _ in range(2)]
    for runtime, _ in replicas:
        wait_ready(runtime)
    kube.seed(policy_configmap("broken", {"policy.rego": BROKEN}))
    kube.wait_for(lambda: (status_of(kube, "broken") or {}).get("status") == "error",
                  timeout=10, what="error status")
    for runtime, _ in replicas:  # both loaded the broken set: both want the error status
        assert eventually(lambda r=runtime: r.store.last_report is not None and any(
            e.filename.startswith("broken/") for e in r.store.last_report.errors), 10)
    for runtime, _ in replicas:  # their writers end after the write in hand: no more PATCHes
        runtime.stop()
    patches = kube.requests_matching("PATCH", "/configmaps/broken$")
    assert 1 <= len(patches) <= 2
    assert len({json.dumps(p.body, sort_keys=True) for p in patches}) == 1


def test_a_restarted_replica_writes_nothing_new(kube: FakeKube,
                                                make_runtime: RuntimeFactory) -> None:
    first, _ = make_runtime()
    wait_ready(first)
    kube.wait_for(lambda: status_of(kube, "magtape-policy-lib") and status_of(
        kube, "magtape-policy-privileged-pod"), what="statuses")
    first.stop()
    kube.requests.clear()
    second, _ = make_runtime()
    wait_ready(second)
    # A barrier through the API: a ConfigMap whose status the writer must write. It
    # writes in rounds, in name order, so any status it wanted to rewrite for the
    # magtape-policy-* ConfigMaps is PATCHed no later than the sentinel's.
    kube.seed(policy_configmap("zz-sentinel", {"policy": NO_LATEST}))
    kube.wait_for(lambda: kube.requests_matching("PATCH", "/configmaps/zz-sentinel$"),
                  what="the sentinel's status")
    assert [r.path for r in kube.requests_matching("PATCH")] == [
        r.path for r in kube.requests_matching("PATCH", "/configmaps/zz-sentinel$")]


def test_configmap_without_rego_keys_is_reported(kube: FakeKube,
                                                 make_runtime: RuntimeFactory) -> None:
    kube.seed(policy_configmap("misnamed", {"policy": NO_LATEST}))
    runtime, _ = make_runtime()
    wait_ready(runtime)
    status = kube.wait_for(lambda: status_of(kube, "misnamed"), what="a status")
    assert status["status"] == "error" and ".rego" in status["error"]


def test_builtins_serve_until_the_first_list(kube: FakeKube,
                                             make_runtime: RuntimeFactory) -> None:
    kube.seed(policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
    fault = kube.fail(500, method="GET", path="/configmaps$")
    runtime, engine = make_runtime()
    # The local (built-in) set is active at once, but the pod is not ready.
    report = runtime.store.last_report
    assert report is not None and len(report.policies) >= 10
    assert errcodes(engine, PRIVILEGED) == {"MT2001"}
    kube.wait_for(lambda: len(kube.requests_matching("GET", "/configmaps$")) >= 2,
                  what="list retries with back-off")
    assert not runtime.ready
    kube.faults.remove(fault)
    wait_ready(runtime)
    report = runtime.store.last_report
    assert report is not None
    assert sorted(p.name for p in report.policies) == ["no-latest-tag", "privileged-pod"]


def test_discovery_off_uses_the_builtins_only(kube: FakeKube,
                                              make_runtime: RuntimeFactory) -> None:
    kube.seed(policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
    runtime, _ = make_runtime(Settings(identity=IdentitySettings(namespace=NS)))
    wait_ready(runtime)
    report = runtime.store.last_report
    assert report is not None and "no-latest-tag" not in {p.name for p in report.policies}
    assert not kube.requests_matching(path="/configmaps")


def test_opa_engine_leaves_discovery_and_data_to_kube_mgmt(kube: FakeKube) -> None:
    """An engine that only evaluates gets no store, no discovery, no replication."""
    from magtape.engine.opa import OpaEngine

    unreachable = OpaEngine("http://127.0.0.1:9", timeout_seconds=0.5)
    informers = informers_for(kube)
    runtime = start(replace(SETTINGS, engine=EngineSettings(kind=EngineKind.OPA)),
                    unreachable, informers, Metrics(CollectorRegistry()))
    informers.start()
    try:
        assert runtime.store is None and runtime.informers == [] and runtime.discovery is None
        assert informers.selections == []
        assert not runtime.ready  # OPA's own health decides
        assert kube.requests == []
    finally:
        informers.stop()
        runtime.stop()


def test_no_cluster_serves_the_builtins() -> None:
    engine = EmbeddedEngine(timeout_seconds=10, workers=2)
    runtime = start(SETTINGS, engine, None, Metrics(CollectorRegistry()))
    try:
        assert runtime.ready
        assert errcodes(engine, PRIVILEGED) == {"MT2001"}
    finally:
        runtime.stop()
        engine.close()


SLOW_POLICY = """package kubernetes.admission.slow
import rego.v1
policy_metadata := {"name": "slow", "severity": "LOW", "errcode": "MT9600", "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": sprintf("%d", [n])} if {
  n := count([x | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000); x * y < 0])
}
"""


def test_a_slow_policy_configmap_is_reported_and_the_rest_becomes_ready(kube: FakeKube) -> None:
    kube.seed(policy_configmap("slow", {"policy.rego": SLOW_POLICY}))
    engine = EmbeddedEngine(timeout_seconds=1, vet_timeout_seconds=2)
    try:
        with running_runtime(SETTINGS, engine, kube) as runtime:
            wait_ready(runtime, 30)
            assert errcodes(engine, PRIVILEGED) == {"MT2001"}  # the others enforce
            status = kube.wait_for(lambda: status_of(kube, "slow"), what="a status on the slow one")
            assert status["status"] == "error"
            assert "did not finish within 2s" in json.dumps(status)
            # A later change reloads at once: the slow verdict is remembered.
            kube.seed(policy_configmap("no-latest", {"policy.rego": NO_LATEST}))
            kube.wait_for(lambda: status_of(kube, "no-latest") == {"status": "ok"}, timeout=10,
                          what="the next ConfigMap to load")
    finally:
        engine.close()
