"""`MAGTAPE_PROCESSES=2 magtape serve`: two whole webhooks behind one port and one /metrics.

Real processes throughout (magtape.processes): the admission port is served
by both (seen in /healthz's ``process``), reviews are decided by both, the
primary's /metrics adds the helper's counters to its own, SIGTERM ends
both, and a helper that dies takes the primary down with it so the kubelet
restarts the pod whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import procs
from conftest import REPO, load_objects, review_doc
from magtape.processes import MergedRegistry
from test_serve_cli import Server, start_server
from waiting import eventually

DEPLOYMENT = REPO / "testing/deployments/test-deploy02.yaml"


def ready(server: Server) -> bool:
    try:
        return requests.get(server.metrics + "/readyz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def two() -> Iterator[Server]:
    server = start_server(env={"MAGTAPE_PROCESSES": "2", "MAGTAPE_ENGINE_WORKERS": "1"})
    try:
        eventually(lambda: ready(server), timeout=90, what="both processes ready")
        yield server
    finally:
        server.stop()
        with contextlib.suppress(ProcessLookupError, AssertionError):
            os.kill(helper_pid(server), signal.SIGKILL)  # never left behind a failed test


def helper_pid(server: Server) -> int:
    """The helper's pid, as the primary logs it when it starts it."""
    found = [re.search(r"helper process 1 started \(pid (\d+)", line) for line in server.lines]
    (pid,) = [int(m.group(1)) for m in found if m]
    return pid


def counter(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name and s.labels == labels)


def test_both_processes_answer_and_one_metrics_endpoint_counts_both(two: Server) -> None:
    seen: set[int] = set()
    asked = 0
    while seen != {0, 1}:
        assert asked < 200, f"only process(es) {seen} answered 200 new connections"
        with requests.Session() as fresh:  # a new connection each time
            seen.add(fresh.get(two.base + "/healthz", timeout=5).json()["process"])
        asked += 1
    (obj,) = load_objects(DEPLOYMENT)
    for _ in range(20):
        with requests.Session() as fresh:
            answer = fresh.post(two.base + "/", json=review_doc(obj, "test1"), timeout=10)
        assert answer.json()["response"]["allowed"] is False
    text = requests.get(two.metrics + "/metrics", timeout=5).text
    assert counter(text, "magtape_http_responses_total", code="200") == asked + 20
    decisions = sum(s.value for family in text_string_to_metric_families(text)
                    for s in family.samples if s.name == "magtape_admission_requests_total")
    assert decisions == 20


def test_sigterm_ends_both_processes(two: Server) -> None:
    helper = helper_pid(two)
    two.proc.send_signal(signal.SIGTERM)
    assert two.proc.wait(timeout=30) == 0
    assert not procs.alive(helper)


def test_a_helper_that_dies_takes_the_pod_down(two: Server) -> None:
    os.kill(helper_pid(two), signal.SIGKILL)
    assert two.proc.wait(timeout=30) == 1
    assert any("helper process 1" in line and "exited" in line for line in two.lines)


def test_more_processes_need_a_fixed_admission_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "magtape", "serve", "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0"],
        env={**os.environ, "MAGTAPE_PROCESSES": "2"}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 2
    assert "MAGTAPE_PROCESSES=2 needs a fixed admission port" in result.stderr
    assert "127.0.0.1:0" in result.stderr


def test_the_merged_registry_sums_counters_and_keeps_the_primarys_gauges() -> None:
    def registry(requests_seen: float, up: float) -> CollectorRegistry:
        r = CollectorRegistry()
        c = Counter("demo_requests", "Requests.", ["code"], registry=r)
        c.labels("200").inc(requests_seen)
        Gauge("demo_policies", "Policies loaded.", registry=r).set(up)
        return r

    helper = registry(5, 12)
    Counter("demo_only_in_helper", "Helper only.", registry=helper).inc(2)
    merged = MergedRegistry(registry(3, 12), lambda: [generate_latest(helper).decode()])
    text = generate_latest(merged).decode()  # type: ignore[arg-type]
    assert counter(text, "demo_requests_total", code="200") == 8
    assert counter(text, "demo_policies") == 12  # the primary's, not 24
    assert counter(text, "demo_only_in_helper_total") == 2
    assert text.count("# TYPE demo_requests_total counter") == 1
