"""`tests/e2e/cluster.py up`, the developers' control plane, cleans up after itself.

Why it exists: docs/e2e.md tells developers to run it by hand; stopped by
SIGTERM (a terminal closing, `timeout`, a CI step's cancel) it must stop etcd,
kube-apiserver and the controller manager and remove its work directory as
Ctrl-C does, and a start that fails must not leave a directory behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import procs
from e2e.cluster import REPO, wait_for

COMMAND = [sys.executable, str(REPO / "tests" / "e2e" / "cluster.py"), "up"]


pytestmark = pytest.mark.e2e


def test_sigterm_stops_every_process_and_removes_the_directory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the cluster serves (or the start fails)
        assert line.startswith("cluster up:"), line + proc.stderr.read() if proc.stderr else ""
        (workdir,) = tmp_path.glob("magtape-e2e-*")
        assert len(procs.mentioning(str(workdir))) >= 3, "etcd, apiserver, controller mgr"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: not procs.mentioning(str(workdir)), 30,
             "the control plane's processes to exit")
    assert not workdir.exists(), "the work directory the command made is removed"


def test_a_failed_start_removes_its_directory(tmp_path: Path) -> None:
    """etcd that exits at once: the start fails with its log and leaves nothing."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "etcd").write_text("#!/bin/sh\necho 'etcd: cannot start (test)'\nexit 3\n")
    (fake / "etcd").chmod(0o755)
    work = tmp_path / "tmp"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(work), "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(COMMAND, capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "etcd exited with 3" in result.stderr and "cannot start (test)" in result.stderr
    assert not list(work.iterdir()), "nothing is left behind"
