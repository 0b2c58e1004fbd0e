#!/usr/bin/env python3
"""`magtape check` on many objects: -j N against -j 1, measured side by side.

``make bench ARGS=--check`` (hack/bench.py hands over here). Writes N
Deployments (default 3,000; the README's test-deploy02 under distinct names,
five failures each) to one multi-document file and times the whole command,
start-up, parsing and reporting included, as CI runs it: ``magtape check -o
json FILE`` with ``-j 1`` and with ``-j N``, interleaved over rounds so drift
on a shared machine hits both alike. Prints the median wall and CPU time of
each, their wall-time ratio against the target (-j 2 no more than 0.6x -j 1),
and the load average: the ratio needs idle cores to mean anything. The
evaluation phase alone (input parsed, engine loaded; timed in this process)
is printed beside it: what -j parallelises.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))

TEMPLATE = REPO / "testing" / "deployments" / "test-deploy02.yaml"
TARGET_RATIO = 0.6


def write_objects(path: Path, count: int) -> None:
    obj = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    docs = []
    for i in range(count):
        obj["metadata"]["name"] = f"bench-{i:05d}"
        docs.append(yaml.safe_dump(obj, sort_keys=False))
    path.write_text("---\n".join(docs), encoding="utf-8")


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_check(path: Path, jobs: int, objects: int) -> tuple[float, float]:
    """Wall and CPU seconds (the command and its engine workers) of one run."""
    env = {**os.environ, "MAGTAPE_DENY_LEVEL": "LOW",
           "PYTHONPATH": str(REPO / "app") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cpu = cpu_of_children()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "-j",
                          str(jobs), str(path)], env=env, capture_output=True, text=True,
                         timeout=1800)
    elapsed = time.perf_counter() - start
    cpu = cpu_of_children() - cpu
    # Sanity: every object was evaluated and denied (MT2001), as the template says.
    if out.returncode != 1 or json.loads(out.stdout)["summary"]["denied"] != objects:
        raise SystemExit(f"magtape check -j {jobs} did not deny all {objects} objects "
                         f"(exit {out.returncode}):\n{out.stderr[-2000:]}")
    return elapsed, cpu


def time_evaluation(path: Path, jobs: int) -> float:
    """Seconds of the evaluation phase alone, in process: parsed input, loaded engine."""
    from magtape.check import CheckOptions, _Engine, evaluate
    from magtape.check.manifests import read_manifests
    from magtape.settings import Settings

    with path.open(encoding="utf-8") as stdin:
        found = read_manifests([str(path)], stdin)
    settings = Settings()
    with _Engine(settings, jobs) as engine:
        engine.ready({})
        start = time.perf_counter()
        evaluate(settings, found, CheckOptions(jobs=jobs), started=engine)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=3000, help="Deployments (default 3000)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel run's -j (default 2)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="magtape-bench-check-") as tmp:
        path = Path(tmp) / "deployments.yaml"
        write_objects(path, args.objects)
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.jobs: []}
        phase: dict[int, list[float]] = {1: [], args.jobs: []}
        for _ in range(args.rounds):
            for jobs in runs:
                runs[jobs].append(time_check(path, jobs, args.objects))
                phase[jobs].append(time_evaluation(path, jobs))
    wall = {j: statistics.median(w for w, _ in r) for j, r in runs.items()}
    cpu = {j: statistics.median(c for _, c in r) for j, r in runs.items()}
    print(f"\nmagtape check: {args.objects} Deployments, {os.cpu_count()} CPUs, "
          f"{args.rounds} round(s), whole command (medians); load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    evaluation = {j: statistics.median(r) for j, r in phase.items()}
    print(f"{'':<8}{'wall s':>8}{'objects/s':>12}{'CPU s':>8}{'evaluation phase s':>21}")
    for j in runs:
        print(f"{f'-j {j}':<8}{wall[j]:>8.2f}{args.objects / wall[j]:>12.0f}{cpu[j]:>8.2f}"
              f"{evaluation[j]:>21.2f}")
    print(f"\nevaluation phase alone (parsed input, loaded engine): -j {args.jobs} / -j 1 = "
          f"{evaluation[args.jobs] / evaluation[1]:.2f}")
    ratio = wall[args.jobs] / wall[1]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\n-j {args.jobs} / -j 1 wall time ratio: {ratio:.2f}   "
          f"({verdict} the target: <= {TARGET_RATIO}; needs {args.jobs} idle cores: compare "
          "the load average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
