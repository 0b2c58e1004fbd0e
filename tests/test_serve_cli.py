"""`magtape serve` as a user runs it: the README walk-through against the real CLI.

Each server's stderr is drained by a thread into a list the tests read, so a
chatty server can never block on a full pipe, and start-up is awaited on its
own "listener on" log line rather than by polling. The shared server is never
stopped by a test; the SIGTERM test starts its own.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import REPO, load_objects, review_doc

DENIAL = (
    '[FAIL] HIGH - Found privileged Security Context for container "test-deploy02" (MT2001), '
    '[FAIL] LOW - Liveness Probe missing for container "test-deploy02" (MT1001), '
    '[FAIL] LOW - Readiness Probe missing for container "test-deploy02" (MT1002), '
    '[FAIL] LOW - Resource limits missing (CPU/MEM) for container "test-deploy02" (MT1003), '
    '[FAIL] LOW - Resource requests missing (CPU/MEM) for container "test-deploy02" (MT1004)'
)
START_TIMEOUT = 90.0


@dataclass
class Server:
    proc: subprocess.Popen[str]
    base: str = ""
    metrics: str = ""
    lines: list[str] = field(default_factory=list)  # stderr so far
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # EOF: the process closed stderr

    def wait_for(self, text: str) -> str:
        """The first stderr line containing ``text``; fails on exit or timeout."""
        while True:
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {START_TIMEOUT}s:\n"
                                     + "".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"exited {self.proc.wait()} before {text!r}:\n"
                                     + "".join(self.lines))
            if text in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(*extra: str, env: dict[str, str] | None = None) -> Server:
    port, metrics = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "magtape", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{metrics}", *extra],
        env={**os.environ, "MAGTAPE_DENY_LEVEL": "LOW", "MAGTAPE_LOG_LEVEL": "INFO",
             **(env or {})},
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    server = Server(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics}")
    threading.Thread(target=server.drain, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def serve() -> Iterator[Server]:
    server = start_server()
    try:
        server.wait_for("admission listener on")
        yield server
    finally:
        server.stop()


def _post(base: str, path: Path) -> dict[str, object]:
    (obj,) = load_objects(path)
    resp = requests.post(base + "/", json=review_doc(obj, "test1"), timeout=10)
    assert resp.status_code == 200
    return dict(resp.json()["response"])


def test_test_deploy01_is_allowed_without_warnings(serve: Server) -> None:
    resp = _post(serve.base, REPO / "testing/deployments/test-deploy01.yaml")
    assert resp["allowed"] is True and "warnings" not in resp


def test_test_deploy02_is_denied_with_the_exact_message(serve: Server) -> None:
    resp = _post(serve.base, REPO / "testing/deployments/test-deploy02.yaml")
    assert resp["allowed"] is False
    assert resp["status"] == {"code": 403, "message": DENIAL}
    assert resp["warnings"] == DENIAL.split(", ")


def test_test_deploy03_is_allowed_with_warnings(serve: Server) -> None:
    resp = _post(serve.base, REPO / "testing/deployments/test-deploy03.yaml")
    assert resp["allowed"] is True and resp["warnings"]


def test_metrics_listener_serves_health_and_metrics(serve: Server) -> None:
    # The admission listener does not expose metrics; the metrics listener does.
    assert requests.get(serve.base + "/metrics", timeout=5).status_code == 404
    text = requests.get(serve.metrics + "/metrics", timeout=5).text
    assert "magtape_admission_requests_total" in text
    assert requests.get(serve.metrics + "/readyz", timeout=5).status_code == 200
    assert serve.base != serve.metrics


def test_the_shared_server_logs_and_keeps_running(serve: Server) -> None:
    assert serve.proc.poll() is None
    assert any("admission listener on 127.0.0.1:" in line for line in serve.lines)


def test_sigterm_stops_cleanly() -> None:
    server = start_server()
    try:
        server.wait_for("admission listener on")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        server.wait_for("shutting down")
    finally:
        server.stop()


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "magtape", "serve", "--listen", f"127.0.0.1:{_free_port()}",
             "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"magtape: cannot start: cannot listen on 127.0.0.1:{port} " \
           "(--metrics-listen/MAGTAPE_METRICS_LISTEN): Address already in use" in out.stderr


def test_bad_configuration_stops_startup_naming_the_variable() -> None:
    env = {**os.environ, "MAGTAPE_ENGINE_FAILURE_POLICY": "Sometimes"}
    out = subprocess.run([sys.executable, "-m", "magtape", "serve"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "magtape: configuration error: MAGTAPE_ENGINE_FAILURE_POLICY='Sometimes' is invalid: "
        "accepted Fail, Ignore"]


def test_start_up_logs_the_effective_configuration_once_and_a_deny_level_conflict() -> None:
    # The production overlay's MAGTAPE_DENY_LEVEL=HIGH beside the original's
    # MAGTAPE_DENY_VOLUME=OFF: HIGH wins, and the log says so.
    server = start_server(env={"MAGTAPE_DENY_LEVEL": "HIGH", "MAGTAPE_DENY_VOLUME": "OFF"})
    try:
        server.wait_for("admission listener on")
        summary = [line for line in server.lines if "effective configuration:" in line]
        assert len(summary) == 1, server.lines
        assert "deny level HIGH (from MAGTAPE_DENY_LEVEL)" in summary[0]
        conflict = [line for line in server.lines if "both set and differ" in line]
        assert len(conflict) == 1 and "WARNING" in conflict[0], server.lines
        assert "MAGTAPE_DENY_LEVEL wins, so the deny level is HIGH" in conflict[0]
    finally:
        server.stop()
