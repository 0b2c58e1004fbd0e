"""``magtape check --from-cluster`` against the real kube-apiserver: the audit's engine.

The live objects of the kubeconfig's context are checked by ``magtape
audit``'s code (scope, cluster data, exceptions), so both commands must print
the same findings; the offline-only flags are refused with a clear message.
"""

from __future__ import annotations

import json
import subprocess

from e2e.cluster import Cluster
from e2e.support import MAGTAPE, apply
from e2e.test_audit_e2e import deployment
from e2e.test_webhook import namespace


def run(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run([MAGTAPE, *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def test_check_from_cluster_checks_the_live_objects_as_audit_does(cluster: Cluster) -> None:
    opted = namespace(cluster, "check-live")
    other = namespace(cluster, "check-live-other", opted_in=False)
    apply(cluster, [deployment("nolimits", opted, limits=False),
                    deployment("nolimits-elsewhere", other, limits=False),
                    deployment("fine", opted)])

    strict = run(cluster, "check", "--from-cluster", "--deny-level", "HIGH")
    assert strict.returncode == 1, strict.stderr  # MT1003 denies at HIGH
    assert "Deployment/nolimits " in strict.stdout and "MT1003" in strict.stdout
    assert "nolimits-elsewhere" not in strict.stdout  # not opted in: the audit's scope

    every = run(cluster, "check", "--from-cluster", "-A", "--deny-level", "HIGH")
    assert every.returncode == 1 and "Deployment/nolimits-elsewhere" in every.stdout

    checked = run(cluster, "check", "--from-cluster", "-n", opted, "-o", "json",
                  "--deny-level", "LOW")
    audited = run(cluster, "audit", "-n", opted, "-o", "json", "--deny-level", "LOW")
    assert checked.returncode == audited.returncode == 0, checked.stderr + audited.stderr
    got, want = json.loads(checked.stdout), json.loads(audited.stdout)
    assert got["wouldDeny"] == want["wouldDeny"] == []
    assert [r["results"] for r in got["reports"]] == [r["results"] for r in want["reports"]]
    assert any(r["result"] in ("warn", "fail")
               for report in got["reports"] for r in report["results"]), got


def test_offline_flags_and_formats_are_refused_with_the_cluster(cluster: Cluster) -> None:
    with_path = run(cluster, "check", "--from-cluster", "overlays/quickstart")
    assert with_path.returncode == 2
    assert "--from-cluster reads the cluster; PATH cannot be used with it" in with_path.stderr
    sarif = run(cluster, "check", "--from-cluster", "-o", "sarif")
    assert sarif.returncode == 2
    assert "--from-cluster prints text or json (as `magtape audit`), not sarif" in sarif.stderr
