"""`magtape serve` as a user runs it: the README walk-through against the real CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port, metrics = _free_port(), _free_port()
    env = {**os.environ, "MAGTAPE_DENY_LEVEL": "LOW", "MAGTAPE_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magtape", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{metrics}"],
        env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # wait for readiness: poll the endpoint the kubelet polls
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "magtape serve did not become ready"
        time.sleep(0.05)
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _post(base: str, path: Path) -> dict[str, object]:
    (obj,) = load_objects(path)
    resp = requests.post(base + "/", json=review_doc(obj, "test1"), timeout=10)
    assert resp.status_code == 200
    return dict(resp.json()["response"])


def test_test_deploy01_is_allowed_without_warnings(serve: tuple[str, object]) -> None:
    resp = _post(serve[0], REPO / "testing/deployments/test-deploy01.yaml")
    assert resp["allowed"] is True and "warnings" not in resp


def test_test_deploy02_is_denied_with_the_exact_message(serve: tuple[str, object]) -> None:
    resp = _post(serve[0], REPO / "testing/deployments/test-deploy02.yaml")
    assert resp["allowed"] is False
    assert resp["status"] == {"code": 403, "message": DENIAL}
    assert resp["warnings"] == DENIAL.split(", ")


def test_test_deploy03_is_allowed_with_warnings(serve: tuple[str, object]) -> None:
    resp = _post(serve[0], REPO / "testing/deployments/test-deploy03.yaml")
    assert resp["allowed"] is True and resp["warnings"]


def test_metrics_listener_serves_health_and_metrics(serve: tuple[str, object]) -> None:
    base = serve[0]
    port = int(base.rsplit(":", 1)[1])
    # The admission listener does not expose metrics; the metrics listener does.
    assert requests.get(base + "/metrics", timeout=5).status_code == 404
    cmd = [a for a in serve[1].args if isinstance(a, str)]  # type: ignore[attr-defined]
    metrics_port = cmd[cmd.index("--metrics-listen") + 1].rsplit(":", 1)[1]
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "magtape_admission_requests_total" in text
    assert requests.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status_code == 200
    assert port != int(metrics_port)


def test_sigterm_stops_cleanly(serve: tuple[str, subprocess.Popen[bytes]]) -> None:
    proc = serve[1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_bad_configuration_stops_startup_naming_the_variable() -> None:
    env = {**os.environ, "MAGTAPE_ENGINE_FAILURE_POLICY": "Sometimes"}
    out = subprocess.run([sys.executable, "-m", "magtape", "serve"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "magtape: configuration error: MAGTAPE_ENGINE_FAILURE_POLICY='Sometimes' is invalid: "
        "accepted Fail, Ignore"]
