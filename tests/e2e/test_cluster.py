"""The e2e control plane enforces what a real cluster enforces.

Why it exists: the RBAC claims of tests/e2e/test_webhook.py are only worth
something if the harness really authorizes requests (RBAC on, tokens signed
and checked) and the webhook path really goes through the Service. These
tests would pass on a permissive stand-in only if they were wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from e2e.cluster import Cluster, service_account_token, wait_for
from e2e.podrun import Manifests
from e2e.support import MagTape, apply

REPO = Path(__file__).resolve().parents[2]


def test_rbac_is_enforced_for_service_account_tokens(cluster: Cluster) -> None:
    cluster.kubectl("create", "serviceaccount", "-n", "default", "nobody")
    token = service_account_token(cluster, "default", "nobody")
    status, body = cluster.request("/api/v1/namespaces/default/configmaps", token=token)
    assert status == 403, body
    status, _ = cluster.request("/api/v1/namespaces/default/configmaps", token="not-a-token")
    assert status == 401


def test_the_serving_identity_cannot_read_secrets_in_general(magtape: MagTape,
                                                             cluster: Cluster) -> None:
    denied = cluster.kubectl("get", "secrets", "-n", magtape.namespace, check=False,
                             kubeconfig=magtape.serve_kubeconfig)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


def test_a_cut_route_is_a_failed_webhook_call(magtape: MagTape, cluster: Cluster) -> None:
    """Without the Service route the API server cannot reach MagTape (so it does, otherwise)."""
    service = magtape.webhook["webhooks"][0]["clientConfig"]["service"]
    target = cluster.route(service["namespace"], service["name"], service.get("port", 443), None)
    try:
        cluster.kubectl("patch", "validatingwebhookconfiguration",
                        magtape.webhook["metadata"]["name"], "--type=json", "-p", json.dumps(
                            [{"op": "replace", "path": "/webhooks/0/failurePolicy",
                              "value": "Fail"}]))
        cluster.kubectl("create", "namespace", "e2e-route")
        cluster.kubectl("label", "namespace", "e2e-route", "k8s.t-mobile.com/magtape=enabled")
        result = cluster.kubectl("create", "configmap", "-n", "e2e-route", "x", check=False)
        assert result.returncode == 0, "ConfigMaps are not reviewed: the webhook is not called"

        def refused() -> bool:
            result = cluster.kubectl("run", "-n", "e2e-route", "p", "--image=busybox",
                                     "--dry-run=server", check=False)
            return result.returncode != 0 and "failed calling webhook" in result.stderr

        # The API server picks the patched policy up from its watch.
        wait_for(refused, 30, "a Pod to be refused while MagTape is unreachable", interval=0.3)
    finally:
        cluster.kubectl("patch", "validatingwebhookconfiguration",
                        magtape.webhook["metadata"]["name"], "--type=json", "-p", json.dumps(
                            [{"op": "replace", "path": "/webhooks/0/failurePolicy",
                              "value": magtape.webhook["webhooks"][0]["failurePolicy"]}]))
        magtape.route_service()
    assert target.endswith(f":{service.get('port', 443)}")


def test_production_overlay_is_accepted_by_the_api_server(magtape: MagTape,
                                                         cluster: Cluster) -> None:
    """Every object production renders passes the real API server's validation (server-side
    dry run), once the two API versions 1.20 does not serve are converted (listed here)."""
    production = Manifests.render(REPO / "overlays" / "production").for_kubernetes_1_20()
    assert sorted(n.split(":")[0] for n in production.conversions) == [
        "HorizontalPodAutoscaler magtape", "PodDisruptionBudget magtape-pdb"], (
        production.conversions)
    result = apply(cluster, production.objects, "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr
