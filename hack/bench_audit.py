#!/usr/bin/env python3
"""Admission p99 with and without a background audit of 10,000 objects (`make bench ARGS=--audit`).

The API server is the shared fake (tests/fakekube.py) in this process, seeded
with N Deployments (default 10,000, most failing several checks) across 20
opted-in namespaces: creating them through a real API server would take
longer than the benchmark. ``magtape serve`` runs against it with a
kubeconfig, once with ``MAGTAPE_AUDIT=off`` and once with ``on``, in
interleaved rounds; with the audit on, wrk starts only once the audit's
first full pass is under way (its queue is being worked off), and the
objects audited during the measurement are printed, so the figure is
admission *while* the audit runs. wrk loads the admission listener with the
README's failing Deployment at 2 connections (the p99 the main benchmark
uses); the ratio of the medians of p99 is the figure (target <= 1.5).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from bench import WRK_SCRIPT, free_port, run_wrk, start_magtape, wait_ready  # noqa: E402
from magtape.review import make_review  # noqa: E402

# The test suite's fake API server (a test helper, not part of the package).
fakekube: Any = importlib.import_module("fakekube")
FakeKube, Resource = fakekube.FakeKube, fakekube.Resource

DEPLOYMENT_FILE = REPO / "testing" / "deployments" / "test-deploy02.yaml"
NAMESPACES = 20


def seed(kube: Any, objects: int) -> None:
    kube.register(Resource("wgpolicyk8s.io/v1alpha2", "policyreports", "PolicyReport", True))
    kube.register(Resource("coordination.k8s.io/v1", "leases", "Lease", True))
    template = yaml.safe_load(DEPLOYMENT_FILE.read_text())
    kube.seed(*[{"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": f"team-{n:02d}",
                              "labels": {"k8s.t-mobile.com/magtape": "enabled"}}}
                for n in range(NAMESPACES)])
    batch = []
    for i in range(objects):
        obj = json.loads(json.dumps(template))
        obj["metadata"] = {"name": f"app-{i:05d}", "namespace": f"team-{i % NAMESPACES:02d}"}
        if i % 4 == 0:  # a quarter pass the privileged check
            obj["spec"]["template"]["spec"]["containers"][0].pop("securityContext", None)
        batch.append(obj)
        if len(batch) == 1000:
            kube.seed(*batch)
            batch = []
    if batch:
        kube.seed(*batch)


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": server}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    return path


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def measure(env: dict[str, str], audit: bool, body: Path, script: Path,
            args: argparse.Namespace) -> dict[str, float]:
    hook_port, metrics_port = free_port(), free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    proc = start_magtape(hook_port, metrics_port,
                         {**env, "MAGTAPE_AUDIT": "on" if audit else "off"})
    try:
        wait_ready(metrics_url + "/readyz", 120)
        url = f"http://127.0.0.1:{hook_port}/"
        run_wrk(url, str(body), 1, args.connections, str(script))  # warm-up
        before = 0.0
        if audit:
            deadline = time.monotonic() + 120
            # Under way: leading, and the queue holds most of the objects.
            while not metric(metrics_url, "magtape_audit_queue_depth") > args.objects / 2:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the audit's first pass did not start")
                time.sleep(0.2)  # polling a subprocess's metrics; not a test
            before = metric(metrics_url, "magtape_audit_queue_depth")
        r = run_wrk(url, str(body), args.seconds, args.connections, str(script), [proc.pid])
        if audit:
            after = metric(metrics_url, "magtape_audit_queue_depth")
            r["audited_per_s"] = (before - after) / args.seconds
            if not after > 0:
                print("bench: warning: the audit finished during the measurement",
                      file=sys.stderr)
        return r
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=6, help="per run (default 6)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--audit-rate", type=float, default=None,
                    help="MAGTAPE_AUDIT_RATE (default: MagTape's default)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="magtape-bench-audit-"))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    body = tmp / "deployment.json"
    body.write_text(make_review(yaml.safe_load(DEPLOYMENT_FILE.read_text()), "team-00").raw)
    with FakeKube() as kube:
        started = time.monotonic()
        seed(kube, args.objects)
        print(f"seeded {args.objects} Deployments in {NAMESPACES} namespaces in "
              f"{time.monotonic() - started:.1f}s")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig(tmp / "kubeconfig", kube.url)),
               "HOME": str(tmp), "MAGTAPE_LOG_LEVEL": "ERROR", "MAGTAPE_DENY_LEVEL": "LOW",
               "MAGTAPE_K8S_EVENTS_ENABLED": "FALSE",
               "PYTHONPATH": str(REPO / "app") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if args.audit_rate:
            env["MAGTAPE_AUDIT_RATE"] = str(args.audit_rate)
        runs: dict[str, list[dict[str, float]]] = {"without audit": [], "with audit": []}
        for _ in range(args.rounds):
            runs["without audit"].append(measure(env, False, body, script, args))
            runs["with audit"].append(measure(env, True, body, script, args))

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    print(f"\nadmission while auditing {args.objects} objects: {args.connections} connections, "
          f"{args.rounds} rounds x {args.seconds}s, {os.cpu_count()} CPUs (medians)\n")
    print(f"{'':<15}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'audited/s':>12}")
    for name, rs in runs.items():
        audited = f"{med(rs, 'audited_per_s'):>12.0f}" if name == "with audit" else f"{'':>12}"
        print(f"{name:<15}{med(rs, 'rps'):>10.0f}{med(rs, 'p50_ms'):>10.2f}"
              f"{med(rs, 'p99_ms'):>10.2f}{audited}")
    ratio = med(runs["with audit"], "p99_ms") / med(runs["without audit"], "p99_ms")
    print(f"\np99 with audit / without: {ratio:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
