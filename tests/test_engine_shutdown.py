"""SIGTERM ends `magtape serve` and its engine workers fast, even mid-evaluation."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import procs
from conftest import review_doc
from e2e.cluster import free_port
from waiting import eventually

SLOW = """package kubernetes.admission.slow
import rego.v1
policy_metadata := {"name": "slow", "severity": "LOW", "errcode": "MT9500", "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": sprintf("%d", [n])} if {
  input.request.object.metadata.labels.slow == "yes"
  n := count([x | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000); x * y < 0])
}
"""


def test_sigterm_during_an_evaluation_ends_server_and_workers(tmp_path: Path) -> None:
    (tmp_path / "slow.rego").write_text(SLOW)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "magtape", "serve", "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{free_port()}", "--policies", str(tmp_path)],
        env={**os.environ, "MAGTAPE_ENGINE_TIMEOUT_SECONDS": "2", "MAGTAPE_LOG_LEVEL": "INFO"},
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the server logs this once it listens
            if "admission listener on" in line:
                break
        else:
            raise AssertionError(f"magtape serve exited with {proc.wait()}")
        threading.Thread(target=lambda: proc.stderr and proc.stderr.read(), daemon=True).start()
        workers = procs.children(proc.pid)
        assert len(workers) == 2, workers

        def slow_request() -> None:
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "a", "labels": {"slow": "yes"}},
                   "spec": {"containers": [{"name": "c", "image": "x"}]}}
            req = urllib.request.Request(f"http://127.0.0.1:{port}/",
                                         json.dumps(review_doc(pod)).encode(),
                                         {"Content-Type": "application/json"})
            # The server may close the connection while stopping.
            with contextlib.suppress(OSError):
                urllib.request.urlopen(req, timeout=30).read()

        spent = {w: procs.cpu_seconds(w) for w in workers}
        sender = threading.Thread(target=slow_request)
        sender.start()
        # Wait until a worker burns CPU on the request.
        eventually(lambda: any(procs.cpu_seconds(w) > spent[w] + 0.2 for w in workers), 10,
                   "the slow evaluation to start")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        sender.join(30)
        assert not any(procs.alive(w) for w in workers), "engine workers outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
