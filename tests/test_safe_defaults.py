"""Webhook defaults that cannot brick a cluster, checked on the rendered manifests.

The argument (docs/security.md, "Defaults that cannot brick a cluster") is
made by evaluating the rendered ValidatingWebhookConfiguration the way the API
server does (namespaceSelector against a Namespace's labels, rules against a
resource), not by comparing YAML text:

- production's timeoutSeconds is at most 3;
- no webhook matches kube-system, kube-node-lease, kube-public or
  magtape-system, even carrying the opt-in label; on 1.21+ by the automatic
  kubernetes.io/metadata.name label, on 1.20 (no automatic label) because the
  kube-* namespaces lack the opt-in label and magtape-system sets the name label
  itself;
- nothing MagTape itself needs to start, elect a leader, load policies or
  be repaired (its Deployment and Pods, its ConfigMaps, Lease, Secrets, the
  webhook configuration `magtape init` writes) is ever sent to MagTape.
"""

from __future__ import annotations

from typing import Any

import pytest

from test_kustomize import OPT_IN_LABEL, TARGETS, objects, one, render

PROTECTED = ("kube-system", "kube-node-lease", "kube-public", "magtape-system")
METADATA_NAME = "kubernetes.io/metadata.name"
HOOK_TARGETS = [t for t in TARGETS if t.startswith(("base", "overlays/"))]


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against labels; an absent selector matches everything."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def test_selector_matches_follows_the_api_servers_semantics() -> None:
    sel = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]},
                                {"key": "b", "operator": "NotIn", "values": ["y"]}]}
    assert selector_matches(sel, {"a": "x"})  # NotIn matches a missing key
    assert not selector_matches(sel, {"a": "x", "b": "y"})
    assert not selector_matches(sel, {"b": "z"})
    assert selector_matches(None, {})


def intercepts(hook: dict[str, Any], group: str, resource: str) -> bool:
    """Whether a webhook's rules cover CREATE or UPDATE of ``group``/``resource``."""
    for rule in hook["rules"]:
        groups, resources = rule["apiGroups"], rule["resources"]
        if ("*" in groups or group in groups) and ("*" in resources or resource in resources):
            return True
    return False


def only_magtape_kinds(hook: dict[str, Any]) -> bool:
    """The hook sees MagTape's own custom resources and nothing else."""
    return all(rule["apiGroups"] == ["magtape.k8s.t-mobile.com"] for rule in hook["rules"])


def hooks(target: str) -> list[dict[str, Any]]:
    return list(one(target, "ValidatingWebhookConfiguration", "magtape-webhook")["webhooks"])


def rendered_namespace_labels(target: str, name: str) -> dict[str, str]:
    found = [o for o in objects(target, "Namespace") if o["metadata"]["name"] == name]
    return dict(found[0]["metadata"].get("labels", {})) if found else {}


@pytest.mark.parametrize("target", ["overlays/production", "overlays/airgapped"])
def test_production_times_out_within_3_seconds(target: str) -> None:
    assert all(h["timeoutSeconds"] <= 3 for h in hooks(target))


@pytest.mark.parametrize("target", HOOK_TARGETS)
@pytest.mark.parametrize("namespace", PROTECTED)
def test_no_webhook_reviews_a_protected_namespace_even_opted_in(target: str,
                                                                namespace: str) -> None:
    stray = {OPT_IN_LABEL: "enabled"}
    # 1.21 and later: the API server sets the name label on every namespace.
    current = {**rendered_namespace_labels(target, namespace), **stray,
               METADATA_NAME: namespace}
    # 1.20: no automatic label; only what the manifests (or nobody) set.
    old = {**rendered_namespace_labels(target, namespace)}
    for hook in hooks(target):
        assert not selector_matches(hook.get("namespaceSelector"), current), \
            (hook["name"], namespace)
        # On 1.20 the exceptions hook still sees MagTapeExceptions created in a
        # kube-* namespace (inert there: no policy applies); nothing else.
        if not only_magtape_kinds(hook):
            assert not selector_matches(hook.get("namespaceSelector"), old), \
                (hook["name"], namespace)
    if namespace == "magtape-system":  # ours: protected on 1.20 even with a stray opt-in
        old_stray = {**rendered_namespace_labels(target, namespace), **stray}
        assert all(not selector_matches(h.get("namespaceSelector"), old_stray)
                   for h in hooks(target))


@pytest.mark.parametrize("target", HOOK_TARGETS)
def test_an_opted_in_namespace_is_reviewed(target: str) -> None:
    """The other side: the exclusions do not exclude everything."""
    labels = {OPT_IN_LABEL: "enabled", METADATA_NAME: "team-a"}
    policy = hooks(target)[0]
    assert selector_matches(policy["namespaceSelector"], labels)
    assert intercepts(policy, "apps", "deployments")


# What MagTape needs that is not a manifest: the audit Lease and the TLS
# Secret (created at run time), the webhook configuration `magtape init`
# updates, Events it writes.
RUNTIME_RESOURCES = [("coordination.k8s.io", "leases"), ("", "secrets"), ("", "events"),
                     ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
                     ("", "configmaps"), ("", "namespaces"), ("", "serviceaccounts")]


@pytest.mark.parametrize("target", HOOK_TARGETS)
def test_magtape_never_reviews_what_it_needs_itself(target: str) -> None:
    for hook in hooks(target):
        for group, resource in RUNTIME_RESOURCES:
            assert not intercepts(hook, group, resource), (hook["name"], resource)


@pytest.mark.parametrize("target", HOOK_TARGETS)
def test_magtape_own_objects_cannot_be_blocked(target: str) -> None:
    """Every namespaced object MagTape ships lives where no webhook looks."""
    mine = [o for o in render(target) if o["metadata"].get("namespace")]
    assert {o["metadata"]["namespace"] for o in mine} == {"magtape-system"}
    assert {"Deployment", "ConfigMap", "Service"} <= {o["kind"] for o in mine}
    labels = {**rendered_namespace_labels(target, "magtape-system"), OPT_IN_LABEL: "enabled"}
    for hook in hooks(target):
        assert not selector_matches(hook.get("namespaceSelector"), labels), hook["name"]


@pytest.mark.parametrize("target", HOOK_TARGETS)
def test_init_writes_nothing_a_webhook_reviews(target: str) -> None:
    """`magtape init` (and so the pods' start) never waits for MagTape: none of
    what its RBAC lets it write goes through a MagTape webhook."""
    writes = []
    for kind in ("Role", "ClusterRole"):
        for role in objects(target, kind):
            if role["metadata"]["name"] != "magtape-init":
                continue
            for rule in role["rules"]:
                if set(rule["verbs"]) & {"create", "update", "patch"}:
                    writes += [(g, r) for g in rule["apiGroups"] for r in rule["resources"]]
    has_init = bool(one(target, "Deployment", "magtape")["spec"]["template"]["spec"]
                    .get("initContainers"))
    assert bool(writes) == has_init, "the init step and its Role come and go together"
    for hook in hooks(target):
        for group, resource in writes:
            assert not intercepts(hook, group, resource), (hook["name"], resource)
