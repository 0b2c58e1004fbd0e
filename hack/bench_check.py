#!/usr/bin/env python3
"""`magtape check` on many objects: -j N against -j 1, measured side by side.

``make bench ARGS=--check`` (hack/bench.py hands over here). Writes N
Deployments (default 3,000; the README's test-deploy02 under distinct names,
five failures each) to one multi-document file and times the whole command,
start-up, parsing and reporting included, as CI runs it: ``magtape check -o
json FILE`` with ``-j 1`` and with ``-j N``, interleaved over rounds so drift
on a shared machine hits both alike. Prints the median wall and CPU time of
each, their wall-time ratio against the target (-j 2 no more than 0.6x -j 1),
every round's figures (the spread on a shared machine) and the load average:
the ratio needs idle cores to mean anything. ``-j N`` splits the input into N
shards, each parsed and checked by its own process (magtape.check.shards), so
the whole command is what is compared.
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
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))

TEMPLATE = REPO / "testing" / "deployments" / "test-deploy02.yaml"
TARGET_RATIO = 0.6
# A round counts as quiet when the rest of the machine used less CPU than this
# during each of its two runs.
QUIET_CPU_SECONDS = 0.25


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


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used so far (Linux); None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # the command and its processes
    others: float | None  # CPU the rest of the machine used meanwhile


def time_check(path: Path, jobs: int, objects: int) -> Run:
    """One run of the command, with what it and the rest of the machine spent."""
    env = {**os.environ, "MAGTAPE_DENY_LEVEL": "LOW",
           "PYTHONPATH": str(REPO / "app") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cpu, busy = cpu_of_children(), busy_cpu_seconds()
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "-j",
                          str(jobs), str(path)], env=env, capture_output=True, text=True,
                         timeout=1800)
    elapsed = time.perf_counter() - start
    cpu = cpu_of_children() - cpu
    after = busy_cpu_seconds()
    others = None if busy is None or after is None else max(0.0, after - busy - cpu)
    # Sanity: every object was evaluated and denied (MT2001), as the template says.
    if out.returncode != 1 or json.loads(out.stdout)["summary"]["denied"] != objects:
        raise SystemExit(f"magtape check -j {jobs} did not deny all {objects} objects "
                         f"(exit {out.returncode}):\n{out.stderr[-2000:]}")
    return Run(elapsed, cpu, others)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=3000, help="Deployments (default 3000)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel run's -j (default 2)")
    # One round's ratio varies by +-0.1 on a shared VM; the median of seven holds still.
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="magtape-bench-check-") as tmp:
        path = Path(tmp) / "deployments.yaml"
        write_objects(path, args.objects)
        runs: dict[int, list[Run]] = {1: [], args.jobs: []}
        for _ in range(args.rounds):
            for jobs in runs:
                runs[jobs].append(time_check(path, jobs, args.objects))
    wall = {j: statistics.median(r.wall for r in rs) for j, rs in runs.items()}
    cpu = {j: statistics.median(r.cpu for r in rs) for j, rs in runs.items()}
    print(f"\nmagtape check: {args.objects} Deployments, {os.cpu_count()} CPUs, "
          f"{args.rounds} round(s), whole command; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    # "others": CPU seconds the rest of the machine used during the run; -j N
    # can only be faster by as much as the cores are idle.
    print(f"{'round':<7}{'-j 1 s':>8}{'others':>8}{f'-j {args.jobs} s':>8}{'others':>8}"
          f"{'ratio':>7}")
    for i, (one, many) in enumerate(zip(runs[1], runs[args.jobs], strict=True), start=1):
        print(f"{i:<7}{one.wall:>8.2f}{_cpu(one.others):>8}{many.wall:>8.2f}"
              f"{_cpu(many.others):>8}{many.wall / one.wall:>7.2f}")
    print(f"\n{'median':<8}{'wall s':>8}{'objects/s':>12}{'CPU s':>8}")
    for j in runs:
        print(f"{f'-j {j}':<8}{wall[j]:>8.2f}{args.objects / wall[j]:>12.0f}{cpu[j]:>8.2f}")
    ratio = wall[args.jobs] / wall[1]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"\n-j {args.jobs} / -j 1 wall time ratio (medians): {ratio:.2f}   "
          f"({verdict} the target: <= {TARGET_RATIO}; needs {args.jobs} idle cores)")
    quiet = [many.wall / one.wall
             for one, many in zip(runs[1], runs[args.jobs], strict=True)
             if one.others is not None and many.others is not None
             and max(one.others, many.others) < QUIET_CPU_SECONDS]
    if quiet:
        print(f"rounds where the rest of the machine used < {QUIET_CPU_SECONDS} CPU s: "
              f"{len(quiet)} of {args.rounds}, ratio median {statistics.median(quiet):.2f} "
              f"(range {min(quiet):.2f}-{max(quiet):.2f})")
    else:
        print("no round had the machine to itself: the ratio above says little")
    return 0


def _cpu(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f}"


if __name__ == "__main__":
    sys.exit(main())
