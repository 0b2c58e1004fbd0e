#!/usr/bin/env python3
"""Throughput, latency and CPU of the admission path, measured side by side.

Runs HTTP servers in turn, each loaded by wrk (a separate C process) at 16
concurrent keep-alive connections:

  floor       a canned Flask + waitress endpoint: the framework's own cost
  floor xP    the same in P processes sharing the port (SO_REUSEPORT), P being
              MagTape's process count (the server plus its engine workers)
  floor xQ    the same in Q = 4 processes: deployment/2's process count
  deployment  `magtape serve` with the built-in policies, a Deployment with
              five failures (the README's test-deploy02)
  service     the same server, a Service
  deployment/2  the Deployment again, with MAGTAPE_PROCESSES=2 and one
              engine worker each: two HTTP processes behind one port
  deployment/pss  the Deployment again, with MAGTAPE_POD_SECURITY=restricted:
              the Pod Security Standards checks (MT30xx) on top of the others
  deployment/pss/2  the same with MAGTAPE_PROCESSES=2 and one engine worker each

Rounds are interleaved (floor, floor xP, deployment, service, ...) so drift
on a shared machine hits every target alike; the figures are medians over
rounds. Besides requests/s and latency, each run reads the CPU time of the
server's whole process tree (engine workers included) from /proc and prints
CPU per request. Then floor and the Deployment targets are run at 2
connections for their p99. Other modes: --scale (hack/bench_scale.py), --check
(hack/bench_check.py), --audit (hack/bench_audit.py), --ui (hack/bench_ui.py),
--ab REV (hack/bench_ab.py), --engine-only.
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
MODES = {
    "--check": "bench_check.py",  # `magtape check -j N` vs -j 1
    "--scale": "bench_scale.py",  # namespaces and object size
    "--audit": "bench_audit.py",  # admission p99 while a 10,000-object audit runs
    "--ui": "bench_ui.py",  # every view of magtape ui at 5,000 namespaces, 50,000 results
    "--ab": "bench_ab.py",  # this tree's admission cost against another revision's
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
    """A Flask app on waitress answering a canned AdmissionReview: the framework floor.

    The socket is bound with SO_REUSEPORT, so several of these processes can
    share one port (the kernel spreads connections over them). waitress'
    task-queue warnings are silenced as ``magtape serve`` silences them
    (magtape.cli): logging one for every queued request cost the floor ~8 %
    of its CPU under the bench's load, work MagTape does not do.
    """
    import logging

    from flask import Flask, Response, request
    from waitress import serve

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    app = Flask("floor")

    @app.post("/")
    def admit() -> Response:
        request.get_data()
        return Response(CANNED, mimetype="application/json")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    serve(app, sockets=[sock], threads=threads, _quiet=True)


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu_seconds(roots: list[int], descendants: bool = True) -> float:
    """CPU time (user + system) of ``roots`` and all their descendants, reaped ones included
    (``descendants=False``: of ``roots`` alone, e.g. the server without its engine workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total = 0
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        found = stats.get(pid)
        if found is None or pid in seen:  # a root may descend from another root
            continue
        seen.add(pid)
        # utime, stime, cutime, cstime (fields 14-17 of /proc/PID/stat)
        total += sum(int(f) for f in found[11:15 if descendants else 13])
        if descendants:
            todo.extend(children.get(pid, []))
    return total / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_magtape(port: int, metrics: int, env: dict[str, str], stderr: Any = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``magtape serve`` on loopback: admission on ``port``, metrics and /readyz on ``metrics``
    (the code it runs is the one ``env``'s PYTHONPATH finds)."""
    return subprocess.Popen([sys.executable, "-m", "magtape", "serve",
                             "--listen", f"127.0.0.1:{port}",
                             "--metrics-listen", f"127.0.0.1:{metrics}"],
                            env=env, stderr=stderr, cwd=cwd)


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
            script: str, pids: list[int] | None = None) -> dict[str, float]:
    """One wrk run; with ``pids``, also the server tree's CPU per request."""
    cpu_before = tree_cpu_seconds(pids) if pids else 0.0
    own_before = tree_cpu_seconds(pids, descendants=False) if pids else 0.0
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", script, url],
        capture_output=True, text=True, env={**os.environ, "BENCH_BODY": body_file}, check=True)
    cpu = tree_cpu_seconds(pids) - cpu_before if pids else float("nan")
    own = tree_cpu_seconds(pids, descendants=False) - own_before if pids else float("nan")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH "))
    r = json.loads(line[6:])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": r["errors"],
            "cpu_us": cpu / max(1, r["requests"]) * 1e6,
            "server_cpu_us": own / max(1, r["requests"]) * 1e6}


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
    # Other modes live in their own modules: one flag, one file.
    for flag, module in MODES.items():
        if flag in sys.argv[1:]:
            os.execv(sys.executable, [sys.executable, str(Path(__file__).with_name(module)),
                                      *(a for a in sys.argv[1:] if a != flag)])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=6, help="per run (default 6)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=Settings().http.threads,
                    help="server worker threads (default: MagTape's default)")
    ap.add_argument("--workers", type=int, default=Settings().engine.workers,
                    help="engine worker processes (default: MagTape's default)")
    ap.add_argument("--engine-only", action="store_true",
                    help="only time the embedded engine per object (no HTTP)")
    ap.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_only:
        return engine_only(500)
    if args.floor_server:
        floor_server(args.floor_server, args.threads)
        return 0
    return http_bench(args)


def http_bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="magtape-bench-"))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = {}
    deployment = yaml.safe_load(DEPLOYMENT_FILE.read_text())
    for name, obj in (("deployment", deployment), ("service", SERVICE)):
        bodies[name] = tmp / f"{name}.json"
        bodies[name].write_text(make_review(obj, "test1").raw)
    for name in ("floor", "floor xP", "floor xQ", "deployment/2", "deployment/pss",
                 "deployment/pss/2"):
        bodies[name] = bodies["deployment"]

    processes = 1 + args.workers
    # deployment/2: two HTTP processes with one engine worker each (MAGTAPE_PROCESSES=2).
    processes2 = 2 * (1 + 1)
    floor_port, floors_port, floors2_port = free_port(), free_port(), free_port()
    hook_port, metrics_port = free_port(), free_port()
    hook2_port, metrics2_port = free_port(), free_port()
    pss_port, pss_metrics_port = free_port(), free_port()
    pss2_port, pss2_metrics_port = free_port(), free_port()
    env = {**os.environ, "MAGTAPE_LOG_LEVEL": "ERROR", "MAGTAPE_DENY_LEVEL": "LOW",
           "MAGTAPE_THREADS": str(args.threads), "MAGTAPE_ENGINE_WORKERS": str(args.workers),
           "PYTHONPATH": str(REPO / "app") + os.pathsep + os.environ.get("PYTHONPATH", "")}

    # The servers' own logs go to a file, so the figures stay readable; its path is
    # printed when something fails.
    server_log = open(os.path.join(tempfile.gettempdir(), "magtape-bench-servers.log"), "wb")  # noqa: SIM115

    def floor(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, __file__, "--floor-server", str(port),
                                 "--threads", str(args.threads)], env=env, stderr=server_log)

    def magtape(port: int, metrics: int, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        return start_magtape(port, metrics, {**env, **extra}, server_log)

    floor_procs = [floor(floor_port)]
    floors_procs = [floor(floors_port) for _ in range(processes)]
    floors2_procs = [floor(floors2_port) for _ in range(processes2)]
    hook = magtape(hook_port, metrics_port, {})
    hook2 = magtape(hook2_port, metrics2_port,
                    {"MAGTAPE_PROCESSES": "2", "MAGTAPE_ENGINE_WORKERS": "1"})
    hook_pss = magtape(pss_port, pss_metrics_port, {"MAGTAPE_POD_SECURITY": "restricted"})
    hook_pss2 = magtape(pss2_port, pss2_metrics_port,
                        {"MAGTAPE_POD_SECURITY": "restricted", "MAGTAPE_PROCESSES": "2",
                         "MAGTAPE_ENGINE_WORKERS": "1"})
    procs = [*floor_procs, *floors_procs, *floors2_procs, hook, hook2, hook_pss, hook_pss2]
    try:
        wait_ready(f"http://127.0.0.1:{metrics_port}/readyz")
        wait_ready(f"http://127.0.0.1:{metrics2_port}/readyz")  # both of its processes
        wait_ready(f"http://127.0.0.1:{pss_metrics_port}/readyz")
        wait_ready(f"http://127.0.0.1:{pss2_metrics_port}/readyz")
        for port in (floor_port, floors_port, floors2_port):
            wait_for_port(port)
        hook_url, hook2_url = f"http://127.0.0.1:{hook_port}/", f"http://127.0.0.1:{hook2_port}/"
        # Sanity: the full path really evaluates what we think it does.
        for url in (hook_url, hook2_url):
            dep = post(url, bodies["deployment"].read_bytes())["response"]
            assert dep["allowed"] is False and len(dep["warnings"]) == 5, dep
        svc = post(hook_url, bodies["service"].read_bytes())["response"]
        assert svc["allowed"] is True, svc
        pss_url, pss2_url = f"http://127.0.0.1:{pss_port}/", f"http://127.0.0.1:{pss2_port}/"
        pss = post(pss_url, bodies["deployment"].read_bytes())["response"]
        pss_failures = sum("(MT30" in w for w in pss.get("warnings", []))
        assert pss["allowed"] is False and pss_failures, pss
        assert post(pss2_url, bodies["deployment"].read_bytes())["response"] == pss
        urls = {"floor": f"http://127.0.0.1:{floor_port}/",
                "floor xP": f"http://127.0.0.1:{floors_port}/",
                "floor xQ": f"http://127.0.0.1:{floors2_port}/",
                "deployment": hook_url, "service": hook_url, "deployment/2": hook2_url,
                "deployment/pss": pss_url, "deployment/pss/2": pss2_url}
        # "server" CPU is that of the HTTP processes: deployment/2's primary and helper.
        def http_processes(proc: subprocess.Popen[bytes]) -> list[int]:
            return [proc.pid, *(c for c in child_pids(proc.pid)
                                if b"serve" in Path(f"/proc/{c}/cmdline").read_bytes())]

        pids = {"floor": [p.pid for p in floor_procs], "floor xP": [p.pid for p in floors_procs],
                "floor xQ": [p.pid for p in floors2_procs], "deployment": [hook.pid],
                "service": [hook.pid], "deployment/2": http_processes(hook2),
                "deployment/pss": [hook_pss.pid], "deployment/pss/2": http_processes(hook_pss2)}
        for name in urls:  # warm-up
            run_wrk(urls[name], str(bodies[name]), 1, args.connections, str(script))
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in urls}
        pairs: dict[str, list[dict[str, float]]] = {
            "floor": [], "deployment": [], "deployment/2": [], "deployment/pss": [],
            "deployment/pss/2": []}
        for _ in range(args.rounds):
            for name in urls:
                runs[name].append(run_wrk(urls[name], str(bodies[name]), args.seconds,
                                          args.connections, str(script), pids[name]))
            for name in pairs:
                pairs[name].append(run_wrk(urls[name], str(bodies[name]), args.seconds, 2,
                                           str(script), pids[name]))
    except BaseException:
        print(f"bench: failed; the servers' logs are in {server_log.name}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        server_log.close()

    def medians(rs: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in rs) for k in rs[0]}

    med = {n: medians(rs) for n, rs in runs.items()}
    light = {n: medians(rs) for n, rs in pairs.items()}  # the runs at 2 connections
    floor_2 = light.pop("floor")
    print(f"\nMagTape admission benchmark: {args.connections} connections, {args.rounds} rounds "
          f"x {args.seconds:g}s, {os.cpu_count()} CPUs, {args.threads} server threads, "
          f"{args.workers} engine workers (medians over rounds)\n")
    print(f"{'target':<15}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU us/req':>12}"
          f"{'server':>8}{'workers':>9}{'errors':>8}")
    for name, m in med.items():
        label = name.replace("xP", f"x{processes}").replace("xQ", f"x{processes2}")
        print(f"{label:<15}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}"
              f"{m['cpu_us']:>12.0f}{m['server_cpu_us']:>8.0f}"
              f"{m['cpu_us'] - m['server_cpu_us']:>9.0f}{m['errors']:>8.0f}")
    print(f"\nCPU per request is the server's whole process tree (MagTape: the server and its "
          f"{args.workers} engine workers), split into the server process and its workers; "
          "deployment/2 is MAGTAPE_PROCESSES=2 with one engine worker each (its server "
          "column: both HTTP processes); deployment/pss is deployment with "
          f"MAGTAPE_POD_SECURITY=restricted ({pss_failures} MT30xx failures on top), "
          "deployment/pss/2 the same with MAGTAPE_PROCESSES=2.\n")
    for name in ("deployment", "service", "deployment/pss"):
        cpu_ratio = med["floor"]["cpu_us"] / med[name]["cpu_us"]
        tput = med[name]["rps"] / med["floor xP"]["rps"]
        print(f"{name:<14} CPU/request floor/MagTape {cpu_ratio:.2f} (target >= 0.5)   "
              f"throughput vs floor x{processes} {tput:.2f} (target >= 0.5; "
              f"vs floor x1, as many HTTP processes: {med[name]['rps'] / med['floor']['rps']:.2f})")
    for name in ("deployment/2", "deployment/pss/2"):
        print(f"{name} CPU/request floor/MagTape "
              f"{med['floor']['cpu_us'] / med[name]['cpu_us']:.2f}   throughput vs floor "
              f"x{processes2} {med[name]['rps'] / med['floor xQ']['rps']:.2f} "
              "(target >= 0.5; as many processes)")
    pss = med["deployment/pss"]
    print(f"deployment/pss server process alone: CPU/request floor/MagTape "
          f"{med['floor']['cpu_us'] / pss['server_cpu_us']:.2f} (engine workers left out)")
    # The floor itself, which answers a canned review, in one process against P of
    # them: what one waitress process handing requests to task threads reaches.
    print(f"one-process floor: floor / floor x{processes} throughput "
          f"{med['floor']['rps'] / med['floor xP']['rps']:.2f} (one waitress process with "
          "task threads; MagTape serves small reviews in the loop thread and can pass it)")
    for name, m in light.items():
        print(f"p99 at 2 connections: {name} {m['p99_ms']:.2f} ms, floor "
              f"{floor_2['p99_ms']:.2f} ms, ratio {m['p99_ms'] / floor_2['p99_ms']:.2f} "
              "(target <= 3)")
    # Light load, as most clusters send: the same CPU ratio, for information.
    for name, m in light.items():
        print(f"CPU/request at 2 connections: {name} {m['cpu_us']:.0f} us, floor "
              f"{floor_2['cpu_us']:.0f} us, floor/MagTape {floor_2['cpu_us'] / m['cpu_us']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
