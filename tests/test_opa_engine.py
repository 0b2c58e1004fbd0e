"""The `opa` engine against a stand-in OPA that answers in OPA's documented format.

The stand-in serves OPA's Data API (`POST /v1/data/<path>` with `{"input": ...}`
→ `{"result": ...}`, `{}` when undefined, `{"code", "message"}` errors,
`GET /health`) and evaluates the very same Rego (built-in policies and
`policies/lib/main.rego`) with regopy, so the OPA engine must reach exactly the
embedded engine's decisions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from regopy import Interpreter

from conftest import REPO, AppFactory, load_objects, review_doc
from magtape.engine import EngineError
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.opa import OpaEngine
from magtape.engine.sources import builtin_modules
from magtape.review import make_review
from magtape.settings import FailurePolicy


class StandInOpa(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        interp = Interpreter()
        for m in builtin_modules():
            interp.add_module(m.filename, m.source)
        self.interp = interp
        self.bundle = interp.build(None, ["magtape/main/decisions"])
        self.lock = threading.Lock()
        self.mode = "ok"
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInOpa

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/health" else 404, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.server.mode
        if mode == "hang":
            self.server.release.wait(30)
        if mode == "error":
            return self._send(500, {"code": "internal_error",
                                    "message": "eval_conflict_error: complete rules must not "
                                               "produce multiple outputs"})
        if self.path != "/v1/data/magtape/main/decisions" or mode == "undefined":
            return self._send(200, {})  # OPA's answer for an undefined document
        with self.server.lock:
            self.server.interp.set_input_term(json.dumps(body["input"]))
            out = self.server.interp.query_bundle_entrypoint(self.server.bundle,
                                                             "magtape/main/decisions")
            result = json.loads(str(out))["expressions"][0]
        self._send(200, {"result": result})


@pytest.fixture
def opa() -> Iterator[StandInOpa]:
    server = StandInOpa()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


MANIFESTS = sorted((REPO / "testing").rglob("*.yaml"))
MANIFESTS = [p for p in MANIFESTS if p.name != "functional-tests.yaml"]


def test_every_testing_manifest_gets_the_embedded_engines_decision(
        opa: StandInOpa, builtin_engine: EmbeddedEngine) -> None:
    engine = OpaEngine(opa.url, timeout_seconds=10)
    assert engine.ready
    compared = 0
    for path in MANIFESTS:
        for obj in load_objects(path):
            if obj.get("kind") == "Namespace":
                continue
            review = make_review(obj, "test1")
            assert engine.evaluate(review).violations == \
                builtin_engine.evaluate(review).violations, path
            compared += 1
    assert compared >= 10


@pytest.mark.parametrize("mode, message", [
    ("error", "OPA answered HTTP 500: eval_conflict_error"),
    ("undefined", "OPA has no data.magtape.main.decisions"),
])
def test_opa_errors_are_engine_failures(opa: StandInOpa, mode: str, message: str) -> None:
    opa.mode = mode
    with pytest.raises(EngineError, match=message):
        OpaEngine(opa.url, timeout_seconds=5).evaluate(make_review(_deployment()))


def test_opa_timeout_and_unreachable(opa: StandInOpa) -> None:
    opa.mode = "hang"
    with pytest.raises(EngineError, match="unreachable: ReadTimeout"):
        OpaEngine(opa.url, timeout_seconds=0.2).evaluate(make_review(_deployment()))
    opa.release.set()
    gone = OpaEngine("http://127.0.0.1:9", timeout_seconds=1)
    assert gone.ready is False
    with pytest.raises(EngineError, match="unreachable: ConnectionError"):
        gone.evaluate(make_review(_deployment()))


@pytest.mark.parametrize("policy, allowed", [("Fail", False), ("Ignore", True)])
def test_opa_down_follows_the_failure_policy(make_client: AppFactory, policy: str,
                                             allowed: bool) -> None:
    client = make_client(engine=OpaEngine("http://127.0.0.1:9", timeout_seconds=1),
                         engine_failure_policy=FailurePolicy(policy))
    resp = client.post("/", json=review_doc(_deployment())).get_json()["response"]
    assert resp["allowed"] is allowed and "OPA" in resp["warnings"][0]


def _deployment() -> dict[str, Any]:
    (obj,) = load_objects(Path(REPO / "testing/deployments/test-deploy02.yaml"))
    return dict(obj)
