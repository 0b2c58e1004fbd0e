"""docs/install.md's quickstart, command by command, against the e2e API server.

Why it exists: install instructions rot silently. This runs the quickstart's
kubectl commands exactly as written, in order, on the e2e cluster before
anything else is installed there (conftest.py puts this module first). The
cluster has no kubelet, so two things stand in for one: MagTape's processes
are started the way the pod would run them (the ``magtape`` fixture), and
once their readiness probes pass, the Pods' status is reported Ready the way
a kubelet would report it, which is what ``rollout status`` waits for. Then
the walk-through's denial proves the installation works.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
from pathlib import Path

import pytest

from e2e.cluster import Cluster
from e2e.support import MagTape

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "install.md"


def quickstart_commands() -> list[str]:
    section = DOC.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    block = next((b for b in blocks if "kubectl apply -k" in b), None)
    assert block, "docs/install.md's Quickstart has no `kubectl apply -k` block"
    return [line.strip() for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def report_pods_ready(cluster: Cluster, namespace: str, selector: dict[str, str]) -> None:
    """What the kubelet does once a pod's readiness probes pass: its status says Ready."""
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for pod in cluster.get_json("pods", "-n", namespace, "-l", labels)["items"]:
        status = {"phase": "Running", "startTime": now, "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("Initialized", "ContainersReady", "Ready")]}
        cluster.kubectl("patch", "pod", "-n", namespace, pod["metadata"]["name"],
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": status}))


def test_quickstart_as_written(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    commands = quickstart_commands()
    assert [c.split()[:2] for c in commands] == [["kubectl", "apply"], ["kubectl", "-n"],
                                                 ["kubectl", "create"], ["kubectl", "label"]], (
        f"the quickstart changed; update this test with it: {commands}")
    for command in commands:
        argv = shlex.split(command)
        if "rollout" in argv:
            magtape: MagTape = request.getfixturevalue("magtape")  # the pod's processes
            deployment = next(o for o in magtape.manifests.of_kind("Deployment"))
            report_pods_ready(cluster, magtape.namespace,
                              deployment["spec"]["selector"]["matchLabels"])
        result = cluster.kubectl(*argv[1:], check=False, timeout=60, cwd=REPO)
        assert result.returncode == 0, f"`{command}` failed:\n{result.stderr}{result.stdout}"
    denied = cluster.kubectl("apply", "--dry-run=server", "-n", "test1", "-f",
                             str(REPO / "testing/deployments/test-deploy02.yaml"), check=False)
    assert denied.returncode != 0 and "(MT2001)" in denied.stderr, denied.stderr
