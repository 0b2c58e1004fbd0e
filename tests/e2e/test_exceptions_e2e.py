"""Exceptions and UPDATE semantics against the real kube-apiserver, with kubectl.

Why it exists: the unit and webhook tests post AdmissionReviews themselves;
here the API server sends them. It runs the shipped CRD's schema, calls
MagTape's second webhook for MagTapeException objects, builds the UPDATE
reviews (object and oldObject) for a finalizer removal, and MagTape reads the
exceptions with the rights the rendered RBAC gives it. Expiry is moved by
editing ``expiresAt`` into the past, never by waiting for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from e2e.cluster import Cluster, wait_for
from e2e.support import OPT_IN, MagTape, apply, container
from e2e.test_webhook import namespace, wait_denied

EXCEPTIONS_HOOK = "exceptions.magtape.webhook.k8s.t-mobile.com"
EXISTING = "[already failing before this update: allowed]"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def privileged_pod(name: str, ns: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, **meta},
            "spec": {"containers": [container("agent", privileged=True)]}}


def exception(name: str, ns: str, expires: datetime, checks: tuple[str, ...] = ("MT2001",),
              names: tuple[str, ...] = ("legacy-*",)) -> dict[str, Any]:
    return {"apiVersion": "magtape.k8s.t-mobile.com/v1alpha1", "kind": "MagTapeException",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"checks": list(checks), "match": {"names": list(names)},
                     "expiresAt": stamp(expires), "reason": "e2e", "owner": "e2e@example.com"}}


def fail_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning: [FAIL]")]


def test_invalid_exceptions_are_refused(magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-ex-invalid", opted_in=False)  # checked in every namespace
    now = datetime.now(UTC)
    too_long = apply(cluster, [exception("long", ns, now + timedelta(days=120))], check=False)
    assert too_long.returncode != 0
    assert f'admission webhook "{EXCEPTIONS_HOOK}" denied the request' in too_long.stderr
    assert "more than 90 days after creation" in too_long.stderr, too_long.stderr
    unknown = apply(cluster, [exception("unknown", ns, now + timedelta(days=5),
                                        checks=("MT0000",))], check=False)
    assert unknown.returncode != 0 and "unknown check ID(s) MT0000" in unknown.stderr
    missing = exception("no-expiry", ns, now)
    del missing["spec"]["expiresAt"]
    refused = apply(cluster, [missing], check=False)
    assert refused.returncode != 0 and "expiresAt" in refused.stderr, refused.stderr
    assert cluster.get_json("magtapeexceptions", "-n", ns)["items"] == []


def test_an_exception_applies_to_what_it_matches_until_it_expires(
        magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-ex-apply")
    legacy = privileged_pod("legacy-agent", ns)
    other = privileged_pod("other-agent", ns)
    wait_denied(cluster, legacy, "(MT2001)")
    apply(cluster, [exception("legacy", ns, datetime.now(UTC) + timedelta(days=30))])
    seen: list[str] = []

    def admitted() -> bool:
        result = apply(cluster, [legacy], "--dry-run=server", check=False)
        seen[:] = [result.stderr]
        return result.returncode == 0

    wait_for(admitted, 30, f"the exception to apply (last: {seen})", interval=0.3)
    assert any("[exempted by MagTapeException e2e-ex-apply/legacy until " in w
               for w in fail_warnings(seen[0])), seen[0]
    wait_denied(cluster, other, "(MT2001)", timeout=5)  # not matched by legacy-*
    assert magtape.metric("magtape_policy_evaluations_total", namespace=ns,
                          policy="privileged-pod", result="exempted") >= 1

    # Expire it by editing expiresAt into the past: it stops applying, no restart.
    apply(cluster, [exception("legacy", ns, datetime.now(UTC) - timedelta(minutes=1))])
    wait_denied(cluster, legacy, "(MT2001)")


def test_finalizer_removal_of_an_existing_privileged_pod_is_allowed(
        magtape: MagTape, cluster: Cluster) -> None:
    # The Pod predates the namespace's opt-in, as on a cluster adopting MagTape.
    ns = namespace(cluster, "e2e-ex-finalizer", opted_in=False)
    apply(cluster, [privileged_pod("old-agent", ns, finalizers=["e2e.example.com/hold"])])
    namespace(cluster, ns, opted_in=True)
    wait_denied(cluster, privileged_pod("new-agent", ns), "(MT2001)")
    cluster.kubectl("delete", "pod", "old-agent", "-n", ns, "--wait=false")
    removal = cluster.kubectl("patch", "pod", "old-agent", "-n", ns, "--type=merge",
                              "-p", '{"metadata":{"finalizers":null}}')
    assert any(EXISTING in w and "(MT2001)" in w for w in fail_warnings(removal.stderr)), \
        removal.stderr
    wait_for(lambda: cluster.kubectl("get", "pod", "old-agent", "-n", ns,
                                     check=False).returncode != 0,
             30, "the Pod to be gone once its finalizer was removed", interval=0.2)
    assert OPT_IN.items() <= cluster.get_json("namespace", ns)["metadata"]["labels"].items()


def test_an_update_adding_a_privileged_container_is_denied(magtape: MagTape,
                                                           cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-ex-update")
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [container("app")]}}}}
    apply(cluster, [deployment])
    deployment["spec"]["template"]["spec"]["containers"].append(container("debug", True))
    result = apply(cluster, [deployment], check=False)
    assert result.returncode != 0
    assert ('Found privileged Security Context for container "debug" (MT2001)'
            in result.stderr), result.stderr
