"""/readyz says why a replica is not ready, the first thing an operator asks.

A pod that stays out of the Service is a mystery with only ``{"ready": false}``;
these tests drive the real runtime and engine into each not-ready state (no
policy set loaded, no engine worker, the API's first list not done, the
exceptions', overrides' or owners' first list not done) and read
the reasons /readyz gives, through the metrics app the kubelet probes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import CollectorRegistry

from fakekube import FakeKube, Resource
from informersupport import running_runtime
from magtape.enforcement.exceptions import API_GROUP, API_VERSION, PLURAL
from magtape.engine.embedded import EmbeddedEngine
from magtape.kube.informers import WatchTimings
from magtape.metrics import Metrics
from magtape.runtime import start
from magtape.settings import Settings
from magtape.web import create_metrics_app
from magtape.wiring import Assembly, assemble
from waiting import eventually


def readyz(ready: object, reasons: object) -> tuple[int, dict[str, object]]:
    app = create_metrics_app(ready, Settings(), Metrics(CollectorRegistry()),  # type: ignore[arg-type]
                             reasons=reasons).test_client()  # type: ignore[arg-type]
    resp = app.get("/readyz")
    return resp.status_code, json.loads(resp.data)


@pytest.fixture
def engine() -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(timeout_seconds=10, workers=1)
    yield engine
    engine.close()


def test_ready_says_only_that(engine: EmbeddedEngine) -> None:
    runtime = start(Settings(), engine, None, Metrics(CollectorRegistry()))
    try:
        assert eventually(lambda: runtime.ready, 20)
        assert readyz(lambda: runtime.ready, runtime.not_ready_reasons) == (200, {"ready": True})
    finally:
        runtime.stop()


def test_no_policy_set_loaded_yet(engine: EmbeddedEngine) -> None:
    assert engine.not_ready_reasons()[:1] == [
        "no policies loaded: the engine has no active policy set yet"]
    status, body = readyz(lambda: engine.ready, engine.not_ready_reasons)
    assert status == 503 and body["ready"] is False
    assert "no policies loaded" in str(body["reasons"])


def test_no_engine_worker(engine: EmbeddedEngine) -> None:
    runtime = start(Settings(), engine, None, Metrics(CollectorRegistry()))
    try:
        assert eventually(lambda: runtime.ready, 20)
        # Every worker gone and none coming back (the pool shut down), as when
        # all of them crash or are being replaced at once.
        engine._pool.close()
        assert eventually(lambda: not runtime.ready, 20)
        status, body = readyz(lambda: runtime.ready, runtime.not_ready_reasons)
        assert status == 503
        assert body["reasons"] == ["no engine worker: every policy engine worker process is "
                                   "down or still starting (see the log)"]
    finally:
        runtime.stop()


def test_api_data_not_synced(engine: EmbeddedEngine, fake_kube: FakeKube) -> None:
    fake_kube.fail(503, path="/namespaces")  # the first list of Namespaces never completes
    with running_runtime(Settings(), engine, fake_kube) as runtime:
        fake_kube.wait_for(lambda: len(fake_kube.requests_matching("GET", "/namespaces$")) >= 2,
                           what="failing lists")
        status, body = readyz(lambda: runtime.ready, runtime.not_ready_reasons)
        assert status == 503
        reasons = body["reasons"]
        assert isinstance(reasons, list)
        assert any(r.startswith("API data not synced: waiting for the first list of")
                   and "namespaces" in r for r in reasons), reasons
        fake_kube.clear_faults()
        assert eventually(lambda: runtime.ready, 20)
        assert runtime.not_ready_reasons() == []


@contextmanager
def assembled(fake_kube: FakeKube) -> Iterator[Assembly]:
    """A whole webhook on the fake API, its owners the Deployments."""
    env = {"MAGTAPE_POLICY_DISCOVERY": "false", "MAGTAPE_K8S_EVENTS_ENABLED": "false",
           "MAGTAPE_NAMESPACE_NAME": "magtape-system",
           "MAGTAPE_CONTROLLER_OWNER_KINDS": "apps/v1/deployments"}
    assembly = assemble(Settings.from_env(env), api_client=fake_kube.api_client(),
                        timings=WatchTimings(watch_timeout_seconds=5, backoff_max_seconds=0.2))
    try:
        yield assembly
    finally:
        assembly.close(0)


@pytest.mark.parametrize("failing, named", [
    ("/deployments$", "the controllers' owners (apps/v1/deployments)"),
    ("/magtapeexceptions$", "magtapeexceptions"),
    ("/namespaces/magtape-system/configmaps$", "configmaps"),
])
def test_not_ready_until_exceptions_overrides_and_owners_are_listed(
        fake_kube: FakeKube, failing: str, named: str) -> None:
    """A replica that answered before them would deny what its peers let through:
    a rollout's ReplicaSet inheriting its Deployment's verdict, an exempted object."""
    fake_kube.register(Resource(f"{API_GROUP}/{API_VERSION}", PLURAL, "MagTapeException", True))
    fake_kube.fail(503, method="GET", path=failing)
    with assembled(fake_kube) as assembly:
        fake_kube.wait_for(lambda: len(fake_kube.requests_matching("GET", failing)) >= 3,
                           what="failing lists")
        assert not assembly.ready()
        (reason,) = [r for r in assembly.not_ready_reasons()
                     if r.startswith("enforcement data not synced: waiting for the first list")]
        assert named in reason
        fake_kube.clear_faults()
        assert eventually(assembly.ready, 20)
        assert assembly.not_ready_reasons() == []


def test_without_the_exception_crd_there_is_nothing_to_wait_for(fake_kube: FakeKube) -> None:
    with assembled(fake_kube) as assembly:  # the fake serves no magtapeexceptions
        assert eventually(assembly.ready, 20)
        assert fake_kube.requests_matching("GET", "/magtapeexceptions$")
