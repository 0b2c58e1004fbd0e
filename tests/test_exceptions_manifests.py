"""The exceptions' part of the Kustomize distribution, rendered with the real kustomize.

The CRD matches what the code parses, MagTape's webhook covers exactly
MagTapeException objects and fails closed, MagTape may only read exceptions
(nobody is granted to create them by the distribution), and the shipped
overrides ConfigMap parses.
"""

from __future__ import annotations

import pytest

from magtape.enforcement.exceptions import (
    API_GROUP,
    API_VERSION,
    KIND,
    MATCH_FIELDS,
    MAX_IMAGE_LENGTH,
    MAX_IMAGES,
    PLURAL,
)
from magtape.enforcement.overrides import CONFIG_KEY, EnforcementConfig, parse_config
from magtape.settings import Settings
from test_kustomize import OVERLAYS, objects, one

TARGETS = ["base", *(f"overlays/{o}" for o in OVERLAYS)]
HOOK = "exceptions.magtape.webhook.k8s.t-mobile.com"


@pytest.mark.parametrize("target", TARGETS)
def test_the_crd_is_what_the_code_reads(target: str) -> None:
    crd = one(target, "CustomResourceDefinition", f"{PLURAL}.{API_GROUP}")
    spec = crd["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["scope"]) == (API_GROUP, KIND,
                                                                     "Namespaced")
    (version,) = spec["versions"]
    assert version["name"] == API_VERSION and version["served"] and version["storage"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(schema["required"]) == {"checks", "match", "expiresAt", "reason"}
    assert schema["properties"]["expiresAt"]["format"] == "date-time"
    match = schema["properties"]["match"]["properties"]
    assert set(match) == set(MATCH_FIELDS)
    assert match["images"]["maxItems"] == MAX_IMAGES
    assert match["images"]["items"]["maxLength"] == MAX_IMAGE_LENGTH
    # The built-in admin/edit roles must not pick this kind up.
    assert not any(k.startswith("rbac.authorization.k8s.io/aggregate")
                   for k in crd["metadata"].get("labels", {}))


@pytest.mark.parametrize("target", TARGETS)
def test_the_exceptions_webhook_covers_only_magtapeexceptions_and_fails_closed(
        target: str) -> None:
    vwc = one(target, "ValidatingWebhookConfiguration", "magtape-webhook")
    hook = {h["name"]: h for h in vwc["webhooks"]}[HOOK]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {
        "name": "magtape-svc", "namespace": "magtape-system", "path": "/", "port": 443}
    assert hook["rules"] == [{"apiGroups": [API_GROUP], "apiVersions": [API_VERSION],
                              "resources": [PLURAL], "operations": ["CREATE", "UPDATE"],
                              "scope": "Namespaced"}]
    # An exception in any namespace is checked, but the protected ones (where
    # no policy applies) that MagTape never stands in the way of.
    assert hook["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": ["kube-system", "kube-node-lease", "kube-public", "magtape-system"]}]}


@pytest.mark.parametrize("target", TARGETS)
def test_magtape_reads_exceptions_and_nobody_is_granted_to_write_them(target: str) -> None:
    readers = []
    for role in [*objects(target, "Role"), *objects(target, "ClusterRole")]:
        for rule in role.get("rules", []):
            if API_GROUP in rule.get("apiGroups", []):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, (role["metadata"], rule)
                readers.append(role["metadata"]["name"])
    assert readers == ["magtape-read"]


def test_the_shipped_overrides_configmap_parses_to_the_defaults() -> None:
    cm = one("base", "ConfigMap", Settings().exceptions.enforcement_configmap)
    assert cm["metadata"]["namespace"] == "magtape-system"
    assert parse_config(cm["data"][CONFIG_KEY]) == EnforcementConfig()
