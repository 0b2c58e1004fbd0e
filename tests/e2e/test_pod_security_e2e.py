"""Pod Security Standards checks against the real kube-apiserver, with kubectl.

Why it exists: the complaint against Pod Security Admission is that a
non-compliant Deployment is created and only its Pods fail. Here a namespace
labelled ``k8s.t-mobile.com/pod-security: restricted`` refuses the Deployment
itself at ``kubectl apply``, naming the control and the container; a
MagTapeException for the sidecar's image only (through the shipped CRD's
schema, so ``match.images`` must survive pruning) lets the same Deployment
in; once the exception has expired (``expiresAt`` edited into the past,
never waited for), the next UPDATE of the existing Deployment is allowed
with the "already failing" warning and a new Deployment is denied. The
namespace's level reaches the policies through the replicated Namespace.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from e2e.cluster import Cluster, ClusterError, wait_for
from e2e.support import MAGTAPE, OPT_IN, MagTape, apply, container
from e2e.test_exceptions_e2e import EXISTING, fail_warnings, stamp
from e2e.test_webhook import events, wait_denied, wait_event

LEVEL_LABEL = "k8s.t-mobile.com/pod-security"
SIDECAR_IMAGE = "vendor.example/agent:2.1"
HARDENED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
# Restricted controls a container without any securityContext fails, at least
# (the test exempts whichever the refusal names).
SIDECAR_CONTROLS = ("MT3014", "MT3015", "MT3017")


def restricted_namespace(cluster: Cluster, name: str) -> str:
    apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {**OPT_IN, LEVEL_LABEL: "restricted"}}}])
    return name


def web(ns: str, name: str = "web") -> dict[str, Any]:
    app = {**container("app"), "securityContext": dict(HARDENED)}
    sidecar = {**container("agent"), "image": SIDECAR_IMAGE}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [app, sidecar]}}}}


def sidecar_exception(ns: str, expires: datetime, checks: list[str]) -> dict[str, Any]:
    return {"apiVersion": "magtape.k8s.t-mobile.com/v1alpha1", "kind": "MagTapeException",
            "metadata": {"name": "vendor-agent", "namespace": ns},
            "spec": {"checks": checks,
                     "match": {"kinds": ["Deployment", "ReplicaSet", "Pod"],
                               "names": ["web", "web-*"],
                               "images": ["vendor.example/agent:*"]},
                     "expiresAt": stamp(expires), "reason": "vendor agent until 3.2",
                     "owner": "e2e@example.com"}}


def test_restricted_namespace_refuses_then_exempts_a_sidecar_image_until_expiry(
        magtape: MagTape, cluster: Cluster) -> None:
    ns = restricted_namespace(cluster, "e2e-pss-restricted")
    deployment = web(ns)

    # Refused at creation, naming the control and the container (polled: the
    # namespace's label reaches the policies through the Namespace watch).
    wait_denied(cluster, deployment, "(MT3014)")
    refused = apply(cluster, [deployment], check=False)
    assert refused.returncode != 0, refused.stdout
    for control in SIDECAR_CONTROLS:
        assert f"({control})" in refused.stderr, refused.stderr
    assert 'container "agent"' in refused.stderr and 'container "app"' not in refused.stderr
    assert cluster.kubectl("get", "deployment", "web", "-n", ns, check=False).returncode != 0
    controls = sorted(set(re.findall(r"\((MT30\d\d)\)", refused.stderr)))
    # Its Event reached the API (the note within the 1 KiB events.k8s.io/v1 accepts,
    # cut between whole failures with a count when the failures and fixes say more).
    wait_event(cluster, ns, "Deployment", "web")
    (event,) = [e for e in events(cluster, ns) if e["involvedObject"]["name"] == "web"][:1]
    note = event["message"]
    assert len(note.encode()) <= 1024 and f"({controls[0]})" in note, note

    # An exception for the sidecar's image only: the Deployment is admitted.
    apply(cluster, [sidecar_exception(ns, datetime.now(UTC) + timedelta(days=30), controls)])
    stored = cluster.get_json("magtapeexception", "vendor-agent", "-n", ns)
    assert stored["spec"]["match"]["images"] == ["vendor.example/agent:*"]  # not pruned
    seen: list[str] = []

    def admitted() -> bool:
        result = apply(cluster, [deployment], "--dry-run=server", check=False)
        seen[:] = [result.stderr]
        return result.returncode == 0

    try:
        wait_for(admitted, 30, "the exception to apply", interval=0.3)
    except ClusterError as exc:
        raise AssertionError(f"{exc}; the last answer: {seen}") from None
    created = apply(cluster, [deployment])
    warned = fail_warnings(created.stderr)
    assert any(f"({SIDECAR_CONTROLS[0]}) [exempted by MagTapeException {ns}/vendor-agent"
               in w for w in warned), created.stderr

    # Another image in the sidecar's place is not exempted (a new Deployment whose
    # name the exception matches, so only the image differs).
    other_image = web(ns, "web-other")
    other_image["spec"]["template"]["spec"]["containers"][1]["image"] = "busybox:1.36"
    other = apply(cluster, [other_image], "--dry-run=server", check=False)
    assert other.returncode != 0 and "(MT3014)" in other.stderr, other.stderr

    # Expired: the next UPDATE keeps the existing failures (warned), a new
    # Deployment with the same spec is denied.
    apply(cluster, [sidecar_exception(ns, datetime.now(UTC) - timedelta(minutes=1), controls)])
    wait_denied(cluster, web(ns, "web-two"), "(MT3014)")
    scaled = copy.deepcopy(deployment)
    scaled["spec"]["replicas"] = 2
    updated = apply(cluster, [scaled])
    assert "configured" in updated.stdout, updated.stdout
    existing = [w for w in fail_warnings(updated.stderr) if EXISTING in w]
    assert {c for c in controls if any(f"({c})" in w for w in existing)} == set(controls), \
        updated.stderr
    new = apply(cluster, [web(ns, "web-two")], check=False)
    assert new.returncode != 0 and "(MT3014)" in new.stderr, new.stderr


def test_audit_lists_psa_namespaces_as_candidates_and_what_restricted_would_break(
        magtape: MagTape, cluster: Cluster) -> None:
    ns = "e2e-pss-psa-only"
    apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "labels": {**OPT_IN, "pod-security.kubernetes.io/enforce": "baseline",
                               "pod-security.kubernetes.io/warn": "restricted"}}}])
    created = apply(cluster, [web(ns)])  # PSA labels alone: MagTape enforces no level
    assert not [w for w in fail_warnings(created.stderr) if "(MT30" in w], created.stderr
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}

    def audit(*flags: str) -> dict[str, Any]:
        run = subprocess.run([MAGTAPE, "audit", "-n", ns, "-o", "json", *flags], env=env,
                             capture_output=True, text=True, timeout=180, check=False)
        assert run.returncode in (0, 1), run.stderr
        (view,) = json.loads(run.stdout)["podSecurity"]["namespaces"]
        return dict(view)

    now = audit()
    assert now["candidate"] is True and now["level"] is None
    assert now["psaLabels"] == {"enforce": "baseline", "warn": "restricted"}
    assert now["controls"] == {}
    moved = audit("--pod-security", "restricted")
    assert set(SIDECAR_CONTROLS) <= set(moved["controls"]), moved
    # The Deployment, once: the audit leaves its ReplicaSet and Pods to their owner.
    assert all(n == {"denied": 1, "warned": 0} for n in moved["controls"].values()), moved
