"""/readyz says why a replica is not ready, the first thing an operator asks.

A pod that stays out of the Service is a mystery with only ``{"ready": false}``;
these tests drive the real runtime and engine into each not-ready state (no
policy set loaded, no engine worker, the API's first list not done) and read
the reasons /readyz gives, through the metrics app the kubelet probes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from fakekube import FakeKube
from informersupport import running_runtime
from magtape.engine.embedded import EmbeddedEngine
from magtape.metrics import Metrics
from magtape.runtime import start
from magtape.settings import Settings
from magtape.web import create_metrics_app
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
