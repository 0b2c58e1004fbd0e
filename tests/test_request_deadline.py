"""The engine's deadline counts from when the request was read, not from when a thread took it.

Why it exists: a review showed that, with slow policies and more requests at
once than server threads, a request could queue in waitress for seconds and
then still get the engine's whole deadline: answered after the API server had
given up (3 s). The listener now stamps each request when it has been read
whole, and every evaluation of the request (the object, the old object, an
owner) shares one deadline from then; a request that queued past it gets the
failure policy's answer at once, without taking a worker.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, AppFactory, load_objects, review_doc
from magtape.engine import REQUEST_DEADLINE, EngineError
from magtape.engine.embedded import EmbeddedEngine
from magtape.listeners import ListenerLimits, create_bounded_server
from magtape.review import make_review
from magtape.server import stop_waitress
from magtape.settings import EngineSettings, FailurePolicy, Settings
from magtape.web import RECEIVED_KEY

DEPLOYMENT = load_objects(Path(REPO / "testing/deployments/test-deploy02.yaml"))[0]


@pytest.mark.parametrize("policy, allowed", [("Fail", False), ("Ignore", True)])
def test_a_request_that_queued_past_the_deadline_gets_the_failure_policy_at_once(
        make_client: AppFactory, policy: str, allowed: bool) -> None:
    client = make_client(settings=Settings(engine=EngineSettings(
        failure_policy=FailurePolicy(policy))))
    started = time.monotonic()
    resp = client.post("/", json=review_doc(dict(DEPLOYMENT)),
                       environ_overrides={RECEIVED_KEY: started - 10})
    answer = resp.get_json()["response"]
    assert answer["allowed"] is allowed
    assert any("waited past the" in w and "evaluation deadline" in w for w in answer["warnings"])
    # A request read just now is evaluated as usual.
    fresh = client.post("/", json=review_doc(dict(DEPLOYMENT)),
                        environ_overrides={RECEIVED_KEY: time.monotonic()})
    assert not any("waited past" in w for w in fresh.get_json()["response"]["warnings"])


def test_every_evaluation_of_a_request_shares_its_deadline(
        builtin_engine: EmbeddedEngine) -> None:
    review = make_review(dict(DEPLOYMENT), "test1")
    token = REQUEST_DEADLINE.set(time.monotonic() - 0.001)
    try:
        with pytest.raises(EngineError) as info:
            builtin_engine.evaluate(review)
        assert info.value.reason == "unavailable"
    finally:
        REQUEST_DEADLINE.reset(token)
    token = REQUEST_DEADLINE.set(time.monotonic() + 10)
    try:
        assert builtin_engine.evaluate(review).violations
    finally:
        REQUEST_DEADLINE.reset(token)
    assert builtin_engine.evaluate(review).violations  # no request deadline: the engine's


def test_the_listener_stamps_when_a_request_was_read() -> None:
    seen: list[tuple[Any, float]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append((environ.get(RECEIVED_KEY), time.monotonic()))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = create_bounded_server(app, "127.0.0.1", 0, ListenerLimits(threads=1), "test")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        before = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
        for _ in range(2):  # two requests on one connection: each is stamped
            conn.request("POST", "/", body=json.dumps({"x": 1}))
            assert conn.getresponse().read() == b"ok"
        conn.close()
    finally:
        stop_waitress(server, thread, 2)
    assert len(seen) == 2
    for received, handled in seen:
        assert isinstance(received, float) and before <= received <= handled
    assert seen[0][0] < seen[1][0]
