#!/usr/bin/env python3
"""The admission cost of this tree against another revision's, measured A/B.

``make bench ARGS="--ab REV"`` (hack/bench.py hands over here). The VM these
figures come from drifts by more than one change is worth from one ``make
bench`` to the next (docs/performance.md), so a change is judged here: the
revision is checked out in a temporary git worktree, a ``magtape serve`` from
each tree (this virtualenv, each tree's ``app/`` and policies) is started side
by side, and wrk loads one, then the other, over rounds that alternate which
goes first. Each round reads the CPU of that server's process tree (engine
workers included) per request from ``/proc``; the medians and every round's
totals are printed, and the change in percent. ``--pod-security LEVEL`` sets
``MAGTAPE_POD_SECURITY`` for both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "app"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

from bench import (  # noqa: E402
    DEPLOYMENT_FILE,
    WRK_SCRIPT,
    free_port,
    run_wrk,
    start_magtape,
    wait_ready,
)
from magtape.review import make_review  # noqa: E402


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="magtape-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                        str(path), rev], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                           check=False)


@contextlib.contextmanager
def server(tree: Path, env: dict[str, str], log: int) -> Iterator[tuple[int, int]]:
    """``magtape serve`` from ``tree``: (its pid, its admission port)."""
    port, metrics = free_port(), free_port()
    proc = start_magtape(port, metrics, {**env, "PYTHONPATH": str(tree / "app")}, log, tree)
    try:
        wait_ready(f"http://127.0.0.1:{metrics}/readyz")
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the revision to compare this tree against (e.g. HEAD~3)")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds (default 8)")
    ap.add_argument("--seconds", type=int, default=5, help="per run (default 5)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--pod-security", default="", metavar="LEVEL",
                    help="MAGTAPE_POD_SECURITY for both servers (default: none)")
    args = ap.parse_args()

    env = {**os.environ, "MAGTAPE_LOG_LEVEL": "ERROR", "MAGTAPE_DENY_LEVEL": "LOW"}
    if args.pod_security:
        env["MAGTAPE_POD_SECURITY"] = args.pod_security
    log_path = os.path.join(tempfile.gettempdir(), "magtape-bench-ab.log")
    per_request: dict[str, list[tuple[float, float]]] = {args.rev: [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="magtape-ab-") as tmp, \
            open(log_path, "wb") as log, worktree(args.rev) as other, \
            server(other, env, log.fileno()) as base, \
            server(REPO, env, log.fileno()) as this:
        body, script = Path(tmp) / "review.json", Path(tmp) / "post.lua"
        body.write_text(make_review(yaml.safe_load(DEPLOYMENT_FILE.read_text()), "test1").raw)
        script.write_text(WRK_SCRIPT)
        servers = {args.rev: base, "this tree": this}
        for _, port in servers.values():  # warm up: imports, first evaluations
            run_wrk(f"http://127.0.0.1:{port}/", str(body), 2, args.connections, str(script))
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                pid, port = servers[name]
                got = run_wrk(f"http://127.0.0.1:{port}/", str(body), args.seconds,
                              args.connections, str(script), pids=[pid])
                if got["errors"]:
                    raise SystemExit(f"bench: {name} answered {got['errors']:.0f} requests "
                                     f"with errors; see {log_path}")
                per_request[name].append((got["cpu_us"], got["server_cpu_us"]))

    level = args.pod_security or "none"
    print(f"\nA/B, test-deploy02, MAGTAPE_POD_SECURITY {level}: {args.rounds} alternating "
          f"rounds x {args.seconds}s at {args.connections} connections, CPU per request of "
          "each server's process tree (medians)\n")
    medians = {}
    for name, rounds in per_request.items():
        total = statistics.median(t for t, _ in rounds)
        own = statistics.median(s for _, s in rounds)
        medians[name] = total
        print(f"{name:>12}: {total:6.0f} us/request  server {own:4.0f}  workers "
              f"{statistics.median(t - s for t, s in rounds):4.0f}   rounds "
              f"{sorted(round(t) for t, _ in rounds)}")
    change = medians["this tree"] / medians[args.rev] - 1
    print(f"\nthis tree against {args.rev}: {change:+.1%} CPU per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
