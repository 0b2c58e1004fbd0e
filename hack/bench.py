#!/usr/bin/env python3
"""Throughput and latency of the admission path, measured side by side.

Runs three HTTP servers in turn, each loaded by wrk (a separate C process) at
16 concurrent keep-alive connections:

  floor       a canned Flask + waitress endpoint: the framework's own cost
  deployment  `magtape serve` with the built-in policies, a Deployment with
              five failures (the README's test-deploy02)
  service     the same server, a Service

Rounds are interleaved (floor, deployment, service, floor, ...) so drift on a
shared machine hits every target alike; the figures are medians over rounds.
Prints requests/s, p50 and p99 per target and the full/floor ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))

import yaml  # noqa: E402

from magtape.review import make_review  # noqa: E402
from magtape.settings import Settings  # noqa: E402

# The README walk-through's denied Deployment: privileged, no probes, no resources.
DEPLOYMENT_FILE = REPO / "testing" / "deployments" / "test-deploy02.yaml"
SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "test1"},
    "spec": {"type": "ClusterIP", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}
CANNED = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": {"uid": "x", "allowed": True}})

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
                 + summary.errors.status + summary.errors.timeout
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99)))
end
"""


def floor_server(port: int, threads: int) -> None:
    """A Flask app on waitress answering a canned AdmissionReview: the framework floor."""
    from flask import Flask, Response, request
    from waitress import serve

    app = Flask("floor")

    @app.post("/")
    def admit() -> Response:
        request.get_data()
        return Response(CANNED, mimetype="application/json")

    serve(app, host="127.0.0.1", port=port, threads=threads, _quiet=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling a starting subprocess; not a test
    raise SystemExit(f"bench: {url} did not become ready")


def wait_for_port(port: int, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: nothing listens on port {port}")


def post(url: str, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(json.load(r))


def run_wrk(url: str, body_file: str, seconds: int, connections: int,
            script: str) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", script, url],
        capture_output=True, text=True, env={**os.environ, "BENCH_BODY": body_file}, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH "))
    r = json.loads(line[6:])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": r["errors"]}


def engine_only(iterations: int) -> int:
    """Per-request cost of the embedded engine alone (one thread), by object."""
    from magtape.engine.embedded import EmbeddedEngine
    from magtape.engine.sources import builtin_modules

    engine = EmbeddedEngine(workers=1)
    engine.load(builtin_modules(), {})
    cases = {"deployment (5 failures)": yaml.safe_load(DEPLOYMENT_FILE.read_text()),
             "deployment (compliant)": yaml.safe_load(
                 (REPO / "testing/deployments/test-deploy01.yaml").read_text()),
             "service": SERVICE}
    print(f"\nembedded engine, one thread, median of {iterations} evaluations:")
    for name, obj in cases.items():
        review = make_review(obj, "test1")
        engine.evaluate(review)
        times = []
        for _ in range(iterations):
            t = time.perf_counter()
            engine.evaluate(review)
            times.append(time.perf_counter() - t)
        print(f"  {name:<26}{statistics.median(times) * 1e6:>8.0f} us")
    engine.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=8, help="per run (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=Settings().threads,
                    help="server worker threads (default: MagTape's default)")
    ap.add_argument("--engine-only", action="store_true",
                    help="only time the embedded engine per object (no HTTP)")
    ap.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_only:
        return engine_only(500)
    if args.floor_server:
        floor_server(args.floor_server, args.threads)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="magtape-bench-"))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = {}
    deployment = yaml.safe_load(DEPLOYMENT_FILE.read_text())
    for name, obj in (("deployment", deployment), ("service", SERVICE)):
        bodies[name] = tmp / f"{name}.json"
        bodies[name].write_text(make_review(obj, "test1").raw)
    bodies["floor"] = bodies["deployment"]

    floor_port, hook_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "MAGTAPE_LOG_LEVEL": "ERROR", "MAGTAPE_DENY_LEVEL": "LOW",
           "MAGTAPE_THREADS": str(args.threads),
           "PYTHONPATH": str(REPO / "app") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--floor-server", str(floor_port),
                          "--threads", str(args.threads)], env=env),
        subprocess.Popen([sys.executable, "-m", "magtape", "serve",
                          "--listen", f"127.0.0.1:{hook_port}",
                          "--metrics-listen", f"127.0.0.1:{metrics_port}"], env=env),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{hook_port}/readyz")
        wait_for_port(floor_port)
        floor_url, hook_url = f"http://127.0.0.1:{floor_port}/", f"http://127.0.0.1:{hook_port}/"
        # Sanity: the full path really evaluates what we think it does.
        dep = post(hook_url, bodies["deployment"].read_bytes())["response"]
        assert dep["allowed"] is False and len(dep["warnings"]) == 5, dep
        svc = post(hook_url, bodies["service"].read_bytes())["response"]
        assert svc["allowed"] is True, svc
        urls = {"floor": floor_url, "deployment": hook_url, "service": hook_url}
        for name in urls:  # warm-up
            run_wrk(urls[name], str(bodies[name]), 2, args.connections, str(script))
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in urls}
        for _ in range(args.rounds):
            for name in urls:
                runs[name].append(run_wrk(urls[name], str(bodies[name]), args.seconds,
                                          args.connections, str(script)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)

    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    print(f"\nMagTape admission benchmark: {args.connections} connections, {args.rounds} rounds "
          f"x {args.seconds:g}s, {os.cpu_count()} CPUs, {args.threads} server threads "
          "(medians over rounds)\n")
    print(f"{'target':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, m in med.items():
        print(f"{name:<12}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}"
              f"{m['errors']:>8.0f}")
    print()
    for name in ("deployment", "service"):
        ratio = med[name]["rps"] / med["floor"]["rps"]
        verdict = "meets" if ratio >= 0.5 and med[name]["p99_ms"] <= 15 else "misses"
        print(f"{name}/floor throughput ratio: {ratio:.2f}   p99 {med[name]['p99_ms']:.2f} ms   "
              f"({verdict} the target: ratio >= 0.5, p99 <= 15 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
