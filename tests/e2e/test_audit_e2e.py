"""The background audit against the real kube-apiserver: reports, re-evaluation, one writer.

Why it exists: the unit tests drive the audit against the fake API server;
here two replicas of ``magtape serve`` with ``MAGTAPE_AUDIT=on`` run with the
rendered RBAC's identity (the base's and components/audit's) against the real
API server: its Lease semantics, the shipped PolicyReport CRD's schema
(components/policyreport-crd), real watches. The objects exist before the
audit starts (they are created before the namespace opts in, as on a cluster
adopting MagTape). ``magtape audit``
is then run with the admin's kubeconfig and must print what the reports hold.
Every wait polls the API server with a deadline.

The 5,000-object cap is tested against the fake API server
(tests/test_audit_controller.py): creating 5,000 objects through this API
server and its webhook takes minutes on the shared 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, free_port, wait_for
from e2e.support import MAGTAPE, REPO, MagTape, Proc, apply, container
from e2e.test_webhook import namespace

CRD = REPO / "components" / "policyreport-crd" / "policyreports.yaml"
AUDIT_RBAC = REPO / "components" / "audit" / "rbac.yaml"
LEASE = "magtape-audit"
REPORT = "magtape-audit"
MARKER_POLICY = "policy-e2e-audit-marker"


def deployment(name: str, ns: str, *, privileged: bool = False, limits: bool = True,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    c = container("app", privileged)
    if not limits:
        del c["resources"]["limits"]
    # replicas 0: the controller manager creates no Pods (there is no kubelet anyway)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [c]}}}}


def marker_policy(ns: str) -> dict[str, Any]:
    """A policy (by discovery) failing Deployments labelled e2e-audit=flag: a policy change."""
    rego = "\n".join([
        "package kubernetes.admission.e2e_audit_marker", "", "import rego.v1", "",
        'policy_metadata := {"name": "e2e-audit-marker", "severity": "LOW",',
        '\t"errcode": "MT9901", "targets": {"Deployment"}}', "",
        "matches if input.request.kind.kind in policy_metadata.targets", "",
        "deny contains info if {",
        '\tinput.request.object.metadata.labels["e2e-audit"] == "flag"',
        '\tinfo := {"msg": "[FAIL] LOW - flagged for the audit test (MT9901)"}', "}", ""])
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MARKER_POLICY, "namespace": ns,
                         "labels": {"app": "opa", "openpolicyagent.org/policy": "rego"}},
            "data": {"e2e-audit-marker.rego": rego}}


class Replica:
    def __init__(self, magtape: MagTape, name: str) -> None:
        self.metrics_port = free_port()
        env = {**magtape.serve_env(), "MAGTAPE_AUDIT": "on", "MAGTAPE_POD_NAME": name,
               "MAGTAPE_LISTEN": f"127.0.0.1:{free_port()}",
               "MAGTAPE_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
               "MAGTAPE_ENGINE_WORKERS": "1", "MAGTAPE_AUDIT_LEASE_SECONDS": "4",
               "MAGTAPE_K8S_EVENTS_ENABLED": "FALSE", "MAGTAPE_SLACK_ENABLED": "FALSE"}
        argv = [MAGTAPE, *magtape.serve_container.get("args", [])]
        self.magtape, self.name = magtape, name
        self.proc: Proc = magtape._spawn(name, argv, env, {})

    def leader(self) -> float:
        status, text = self.magtape.http_get(self.metrics_port, "/metrics")
        if status != 200:
            return -1.0
        for line in text.splitlines():
            if line.startswith("magtape_audit_leader "):
                return float(line.split()[1])
        return -1.0


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    """The PolicyReport CRD, and the audit's rights (components/audit): the base
    grants magtape-sa none of them."""
    cluster.kubectl("apply", "-f", str(CRD), "-f", str(AUDIT_RBAC))
    cluster.kubectl("wait", "--for=condition=established", "--timeout=60s",
                    "crd/policyreports.wgpolicyk8s.io")


@pytest.fixture
def replicas(magtape: MagTape, crd: None) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.proc.stop()


def results(cluster: Cluster, ns: str) -> set[tuple[str, str, str]] | None:
    found = cluster.kubectl("get", "policyreports.wgpolicyk8s.io", REPORT, "-n", ns, "-o",
                            "json", check=False)
    if found.returncode != 0:
        return None
    report = json.loads(found.stdout)
    return {(r["resources"][0]["name"], r["rule"], r["result"])
            for r in report.get("results") or []}


def holder(cluster: Cluster, ns: str) -> str:
    found = cluster.kubectl("get", "lease", LEASE, "-n", ns, "-o", "json", check=False)
    return "" if found.returncode else str(json.loads(found.stdout)["spec"].get(
        "holderIdentity") or "")


def test_the_audit_reports_existing_objects_and_follows_changes(
        magtape: MagTape, cluster: Cluster, replicas: list[Replica]) -> None:
    ns = namespace(cluster, "e2e-audit", opted_in=False)
    apply(cluster, [deployment("priv", ns, privileged=True),
                    deployment("nolimits", ns, limits=False),
                    deployment("flagged", ns, labels={"e2e-audit": "flag"}),
                    deployment("fine", ns)])
    namespace(cluster, ns, opted_in=True)  # opted in after its objects exist
    replicas += [Replica(magtape, "audit-a"), Replica(magtape, "audit-b")]

    expected = {("priv", "MT2001", "fail"), ("nolimits", "MT1003", "warn")}
    wait_for(lambda: all(r.proc.alive() for r in replicas) and results(cluster, ns) == expected,
             60, f"the PolicyReport of {ns} (last: {results(cluster, ns)})", interval=0.3)

    # Two replicas, one writer: exactly one holds the Lease and says so.
    wait_for(lambda: sorted(r.leader() for r in replicas) == [0.0, 1.0], 30,
             "one leader and one standby")
    leader = next(r for r in replicas if r.leader() == 1.0)
    assert holder(cluster, magtape.namespace).startswith(leader.name)

    # Fixing an object removes its result.
    apply(cluster, [deployment("priv", ns)])
    wait_for(lambda: results(cluster, ns) == {("nolimits", "MT1003", "warn")}, 30,
             "the fixed Deployment's result to go", interval=0.3)

    # A policy change re-evaluates every object, unchanged ones included.
    apply(cluster, [marker_policy(magtape.namespace)])
    try:
        wait_for(lambda: results(cluster, ns) == {("nolimits", "MT1003", "warn"),
                                                   ("flagged", "MT9901", "warn")},
                 60, f"the new policy's result (last: {results(cluster, ns)})", interval=0.3)
        check_cli_matches_reports(cluster, ns)
    finally:
        cluster.kubectl("delete", "configmap", MARKER_POLICY, "-n", magtape.namespace)
    wait_for(lambda: results(cluster, ns) == {("nolimits", "MT1003", "warn")}, 60,
             "the removed policy's result to go", interval=0.3)

    # The leader goes away: the standby takes over at once (the Lease is released).
    leader.proc.stop()
    standby = next(r for r in replicas if r is not leader)
    wait_for(lambda: standby.leader() == 1.0, 30, "the standby to lead")
    assert holder(cluster, magtape.namespace).startswith(standby.name)
    apply(cluster, [deployment("priv2", ns, privileged=True)], check=False)  # denied: opted in
    cluster.kubectl("label", "namespace", ns, "k8s.t-mobile.com/magtape-")  # opt out
    wait_for(lambda: results(cluster, ns) is None, 30,
             "the opted-out namespace's report to go", interval=0.3)


def check_cli_matches_reports(cluster: Cluster, ns: str) -> None:
    """``magtape audit -o json`` with the admin's kubeconfig prints what the report holds."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    run = subprocess.run([MAGTAPE, "audit", "-n", ns, "-o", "json", "--deny-level", "LOW"],
                         env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr  # nothing fails at LOW in the namespace...
    printed = {r["metadata"]["namespace"]: r for r in json.loads(run.stdout)["reports"]}
    stored = json.loads(cluster.kubectl("get", "policyreports.wgpolicyk8s.io", REPORT, "-n", ns,
                                        "-o", "json").stdout)
    assert printed[ns]["results"] == stored["results"]
    assert printed[ns]["summary"] == stored["summary"]
    strict = subprocess.run([MAGTAPE, "audit", "-n", ns, "--deny-level", "HIGH"], env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert strict.returncode == 1, strict.stderr  # ...but MT1003 would deny at HIGH
    assert "nolimits" in strict.stdout and "MT1003" in strict.stdout
    assert yaml.safe_load(run.stdout)  # valid JSON is valid YAML: -o json is one document
