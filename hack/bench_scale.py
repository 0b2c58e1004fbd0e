#!/usr/bin/env python3
"""Cluster-data and object-size scaling of the embedded engine (`make bench ARGS=--scale`).

For 1k, 5k and 20k namespaces, in one process with the real engine, policy
store and replication hand-off (no API server: the reflector's first list is
handed over as it would be):

  load     first list of N namespaces handed over -> the engine's workers
           serve it (what a fresh replica waits for before it is ready)
  change   one namespace's nodeportRange annotation modified -> the MT2002
           decision for a Service in it changes (polled evaluations)
  RSS      of this process and of each worker process afterwards

Then the cost of one evaluation of a Deployment with 50/200/800/2000
containers lacking probes and resources (it should grow linearly).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))

import yaml  # noqa: E402

from magtape.engine.embedded import EmbeddedEngine  # noqa: E402
from magtape.engine.sources import builtin_modules  # noqa: E402
from magtape.engine.store import PolicyStore  # noqa: E402
from magtape.kube.replication import ReplicatedKind  # noqa: E402
from magtape.kube.rest import NAMESPACES  # noqa: E402
from magtape.review import make_review  # noqa: E402
from magtape.settings import Settings  # noqa: E402

ANNOTATION = "k8s.t-mobile.com/nodeportRange"
DEPLOYMENT_FILE = REPO / "testing" / "deployments" / "test-deploy02.yaml"


def namespace(i: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    name = f"team-{i:05d}"
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": f"uid-{i}", "resourceVersion": str(i),
                         "labels": {"kubernetes.io/metadata.name": name, "team": name},
                         "annotations": annotations or {"owner": f"owner-{i}@example.com"}}}


def node_port_service(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30100}]}}


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids() -> list[int]:
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and b"engine.worker" in cmdline:
                pids.append(int(entry))
    return pids


def has_mt2002(engine: EmbeddedEngine, ns: str) -> bool:
    evaluation = engine.evaluate(make_review(node_port_service(ns)))
    return any(v.errcode == "MT2002" for v in evaluation.violations)


def namespaces_at(n: int, workers: int) -> dict[str, float]:
    engine = EmbeddedEngine(timeout_seconds=10, workers=workers)
    store = PolicyStore(engine, None, builtin_modules())
    try:
        store.load_now()
        store.start()
        kind = ReplicatedKind(store, NAMESPACES)
        objects = [namespace(i) for i in range(n)]
        started = time.monotonic()
        kind.replace(objects)
        target = store.generation
        while store.loaded_generation < target:  # polled: this measures, it does not test
            assert time.monotonic() - started < 120, "the load never finished"
            time.sleep(0.005)
        load = time.monotonic() - started
        victim = objects[n // 2]["metadata"]["name"]
        assert not has_mt2002(engine, victim)
        started = time.monotonic()
        kind.apply("MODIFIED", namespace(n // 2, {ANNOTATION: "30000-30010"}))
        deadline = started + 30
        while not has_mt2002(engine, victim):
            assert time.monotonic() < deadline, "the annotation change never arrived"
        change = time.monotonic() - started
        workers_rss = [rss_mb(pid) for pid in worker_pids()]
        return {"load": load, "change": change, "rss": rss_mb(),
                "worker_rss": max(workers_rss) if workers_rss else float("nan")}
    finally:
        store.stop()
        engine.close()


def big_deployment(containers: int) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(DEPLOYMENT_FILE.read_text())
    template = obj["spec"]["template"]["spec"]["containers"][0]
    obj["spec"]["template"]["spec"]["containers"] = [
        dict(template, name=f"c{i}") for i in range(containers)]
    return obj


def containers_cost(sizes: list[int], repeat: int) -> dict[int, float]:
    engine = EmbeddedEngine(timeout_seconds=30, workers=1, memory_mb=1024)
    try:
        engine.load(builtin_modules(), {})
        out = {}
        for size in sizes:
            review = make_review(big_deployment(size), "test1")
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                violations = engine.evaluate(review).violations
                times.append(time.perf_counter() - started)
            assert len(violations) == 5 * size, len(violations)
            out[size] = statistics.median(times)
        return out
    finally:
        engine.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", default="1000,5000,20000",
                    help="comma-separated namespace counts (default 1000,5000,20000)")
    ap.add_argument("--workers", type=int, default=Settings().engine.workers)
    ap.add_argument("--repeat", type=int, default=5, help="evaluations per Deployment size")
    args = ap.parse_args([a for a in sys.argv[1:] if a != "--scale"])

    print(f"\nCluster data at scale ({args.workers} engine workers, {os.cpu_count()} CPUs)\n")
    print(f"{'namespaces':>10}{'load s':>10}{'change s':>10}{'RSS MB':>10}{'worker MB':>11}")
    for n in (int(x) for x in args.namespaces.split(",")):
        r = namespaces_at(n, args.workers)
        print(f"{n:>10}{r['load']:>10.2f}{r['change']:>10.3f}{r['rss']:>10.0f}"
              f"{r['worker_rss']:>11.0f}")
    print("targets at 20000: load <= 15 s (fresh replica ready), change <= 1 s\n")

    sizes = [50, 200, 800, 2000]
    costs = containers_cost(sizes, args.repeat)
    print(f"{'containers':>10}{'ms/eval':>10}{'us/container':>14}")
    for size, seconds in costs.items():
        print(f"{size:>10}{seconds * 1000:>10.1f}{seconds / size * 1e6:>14.0f}")
    print(f"target: 800 containers < 100 ms (measured {costs[800] * 1000:.0f} ms); linear "
          "growth shows as a flat us/container column")
    return 0


if __name__ == "__main__":
    sys.exit(main())
