"""Least privilege per container: the rendered RBAC grants exactly what the code calls.

Why it exists: issue 10 found the serving container running with the init
step's rights (the CA's Secret, any Secret's creation, the webhook
configuration) and a token mounted into nginx. This test derives, from the
source, the table of Kubernetes API calls each process makes, renders the
base, every overlay and the components with ``kubectl kustomize``, and checks
per ServiceAccount that the granted (apiGroup, resource, verb) set equals the
needed one (nothing missing, nothing extra), that Secrets are only reachable
by name, and that each container only sees its own token.

The table comes from the code, by reading it (``ast``), not from a list kept
by hand: every call of a RawApi verb on a ``ResourceRef`` constant, every
shared informer asked for one (``informers.subscribe(REF, ...)``,
``informers.informer(REF, ...)``: list and watch). Every API call goes through
RawApi, so there is no typed-client call to find. Modules named
``kube/init*.py`` run in ``magtape init``; every other module in ``magtape
serve``. A new API call without its RBAC rule (or the reverse) fails here.
"""

from __future__ import annotations

import ast
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kustomizing import render

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app" / "magtape"
NAMESPACE = "magtape-system"
SERVE_SA, INIT_SA, UI_SA = "magtape-sa", "magtape-init", "magtape-ui"
# What `magtape serve` needs only with MAGTAPE_AUDIT=on (components/audit):
# the calls of the modules under audit/, as magtape-sa.
AUDIT = "magtape-sa with the audit"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

RAW_VERBS = {"get": "get", "list": "list", "watch": "watch", "create": "create",
             "replace": "update", "patch": "patch", "delete": "delete"}
INFORMER_CALLS = ("subscribe", "informer")  # magtape.kube.informers: list and watch
# Secrets a process may reach, by name only (RBAC resourceNames), per verb;
# `create` cannot be limited by name (the name is unknown when authorizing).
SECRET_NAMES = {SERVE_SA: {"get": {"magtape-slack"}},
                INIT_SA: {"get": {"magtape-tls"}, "update": {"magtape-tls"}}}

Right = tuple[str, str, str]  # (apiGroup, resource, verb)


# --------------------------------------------------------------------------- the code


def _resource_refs() -> dict[str, tuple[str, str]]:
    """Module-level ``NAME = ResourceRef(...)`` constants in the app, as (group, plural).

    Found by reading the source, valued by importing the module that defines
    them (their arguments may be other constants).
    """
    refs: dict[str, tuple[str, str]] = {}
    for path in APP.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "ResourceRef"):
                module = "magtape." + ".".join(path.relative_to(APP).with_suffix("").parts)
                ref = getattr(importlib.import_module(module), node.targets[0].id)
                refs[node.targets[0].id] = (ref.group_version.rpartition("/")[0], ref.plural)
    return refs


# Which process (ServiceAccount) runs a module: the first matching prefix of
# its path under app/magtape; everything else runs in `magtape serve`. A new
# process with its own identity adds its modules here.
PROCESS_BY_PREFIX = (("kube/init", INIT_SA), ("ui/", UI_SA), ("audit/", AUDIT))


def process_of(path: Path) -> str:
    rel = path.relative_to(APP).as_posix()
    return next((sa for prefix, sa in PROCESS_BY_PREFIX if rel.startswith(prefix)), SERVE_SA)


def calls_in_code() -> dict[str, set[Right]]:
    return {sa: set(calls) for sa, calls in call_sites().items()}


def call_sites() -> dict[str, dict[Right, set[str]]]:
    """Per ServiceAccount: each right the code needs, and the modules that need it."""
    refs = _resource_refs()
    sites: dict[str, dict[Right, set[str]]] = {SERVE_SA: {}, INIT_SA: {}, UI_SA: {}, AUDIT: {}}
    for path in APP.rglob("*.py"):
        if path.relative_to(APP).as_posix() == "kube/rest.py":
            continue  # the RawApi itself: its callers say what they call
        module = path.relative_to(APP).as_posix()
        needs = sites[process_of(path)]
        found: list[Right] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            first = node.args[0] if node.args else None
            if (isinstance(func, ast.Attribute) and func.attr in INFORMER_CALLS
                  and isinstance(first, ast.Name) and first.id in refs):
                group, plural = refs[first.id]
                found += [(group, plural, "list"), (group, plural, "watch")]
            elif (isinstance(func, ast.Attribute) and func.attr in RAW_VERBS
                  and isinstance(first, ast.Name) and first.id in refs):
                found.append((*refs[first.id], RAW_VERBS[func.attr]))
        for right in found:
            needs.setdefault(right, set()).add(module)
    # The owners and the audit list and watch the kinds of their configuration
    # (the defaults), not constants a scan could find.
    from magtape.audit.kinds import audit_kinds
    from magtape.settings import DEFAULT_CONTROLLER_OWNER_KINDS

    configured = [(SERVE_SA, "kube/owners.py", k.group_version, k.plural)
                  for k in DEFAULT_CONTROLLER_OWNER_KINDS]
    configured += [(AUDIT, "audit/kinds.py", r.group_version, r.plural) for r in audit_kinds(())]
    for who, module, group_version, plural in configured:
        for verb in ("list", "watch"):
            right = (group_version.rpartition("/")[0], plural, verb)
            sites[who].setdefault(right, set()).add(module)
    return sites


def test_the_call_table_is_derived_from_the_code() -> None:
    """The scan finds the calls a reader of the code would list (it is not vacuous)."""
    needed = calls_in_code()
    assert ("", "secrets", "update") in needed[INIT_SA]
    assert ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "update") \
        in needed[INIT_SA]
    assert ("", "namespaces", "watch") in needed[SERVE_SA]
    assert ("events.k8s.io", "events", "create") in needed[SERVE_SA]
    assert not any(r[1] == "secrets" and r[2] != "get" for r in needed[SERVE_SA])
    assert ("wgpolicyk8s.io", "policyreports", "watch") in needed[UI_SA]
    assert ("wgpolicyk8s.io", "policyreports", "create") in needed[AUDIT]
    assert ("apps", "replicasets", "watch") in needed[SERVE_SA]  # the owners
    # Only the audit reads every Pod (their specs may hold secrets in env vars).
    assert ("", "pods", "list") in needed[AUDIT] and ("", "pods", "list") not in needed[SERVE_SA]


# --------------------------------------------------------------------------- the manifests


def granted(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rules bound to each of MagTape's ServiceAccounts (roles and cluster roles)."""
    roles = {(d["kind"], d["metadata"]["name"]): d.get("rules") or [] for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    out: dict[str, list[dict[str, Any]]] = {SERVE_SA: [], INIT_SA: [], UI_SA: []}
    for d in docs:
        if d["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        rules = roles.get((d["roleRef"]["kind"], d["roleRef"]["name"]))
        assert rules is not None, f"{d['metadata']['name']} binds a role that is not rendered"
        for subject in d.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject["name"] in out:
                assert subject.get("namespace") == NAMESPACE
                out[subject["name"]].extend(rules)
    return out


def rights(rules: list[dict[str, Any]]) -> set[Right]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def audit_enabled(docs: list[dict[str, Any]]) -> bool:
    """Whether the rendered settings turn the background audit on."""
    (env,) = [d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith("magtape-env")]
    return str(env["data"].get("MAGTAPE_AUDIT", "off")).lower() == "on"


def targets() -> Iterator[Path]:
    yield REPO / "base"
    yield from sorted(p for p in (REPO / "overlays").iterdir() if p.is_dir())


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Deployment" and
                d["metadata"]["name"] == "magtape"]
    return found


def token_mounts(container: dict[str, Any]) -> set[str]:
    return {m["name"] for m in container.get("volumeMounts") or []
            if m["mountPath"] == TOKEN_PATH}


@pytest.mark.parametrize("target", list(targets()), ids=lambda p: p.name)
def test_rendered_rbac_grants_exactly_what_the_code_calls(target: Path) -> None:
    docs = render(target)
    has_init = bool(deployment(docs)["spec"]["template"]["spec"].get("initContainers"))
    needed = calls_in_code()
    if not has_init:
        needed[INIT_SA] = set()
    if audit_enabled(docs):
        needed[SERVE_SA] |= needed[AUDIT]
    # MAGTAPE_REPLICATE adds list/watch on more kinds; none is configured here.
    got = granted(docs)
    for sa in (SERVE_SA, INIT_SA):
        have = rights(got[sa])
        assert have - needed[sa] == set(), f"{target.name}: {sa} has rights it never uses"
        sites = {**call_sites()[AUDIT], **call_sites()[sa]}
        missing = {right: sorted(sites[right]) for right in needed[sa] - have}
        assert missing == {}, (
            f"{target.name}: {sa} lacks rights the code needs (right: calling modules). Add "
            "them to base/rbac.yaml (magtape-sa), components/audit/rbac.yaml (the audit's) or "
            "base/rbac-init.yaml (magtape-init), or map a module run by another process in "
            "PROCESS_BY_PREFIX")
        for rule in got[sa]:
            if "secrets" in rule["resources"]:
                for verb in rule["verbs"]:
                    if verb == "create":
                        continue
                    allowed = SECRET_NAMES[sa].get(verb, set())
                    assert set(rule.get("resourceNames") or ["*any*"]) <= allowed, (
                        f"{target.name}: {sa} may {verb} Secrets beyond {sorted(allowed)}")


@pytest.mark.parametrize("target", list(targets()), ids=lambda p: p.name)
def test_each_container_sees_only_its_own_token(target: Path) -> None:
    docs = render(target)
    spec = deployment(docs)["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == SERVE_SA
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    containers = {c["name"]: c for c in spec["containers"]}
    assert token_mounts(containers["nginx"]) == set(), "nginx must have no API token"
    (serve_token,) = token_mounts(containers["magtape"])
    sources = volumes[serve_token]["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["expirationSeconds"] <= 3600
    for init in spec.get("initContainers") or []:
        (init_token,) = token_mounts(init)
        secret = volumes[init_token]["secret"]["secretName"]
        (token_secret,) = [d for d in docs if d["kind"] == "Secret"
                           and d["metadata"]["name"] == secret]
        assert token_secret["type"] == "kubernetes.io/service-account-token"
        assert token_secret["metadata"]["annotations"][
            "kubernetes.io/service-account.name"] == INIT_SA
        service_accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
        assert {SERVE_SA, INIT_SA} <= service_accounts


def test_the_ui_component_grants_magtape_ui_exactly_what_it_calls(tmp_path: Path) -> None:
    """components/ui (magtape ui, docs/ui.md): list and watch of what its reflectors read,
    nothing else; and the webhook's identities gain nothing from it."""
    rel = os.path.relpath(REPO, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/ui"]}))
    got = granted(render(tmp_path))
    needed = calls_in_code()
    have = rights(got[UI_SA])
    assert have == needed[UI_SA], (f"extra: {have - needed[UI_SA]}; "
                                   f"missing: {needed[UI_SA] - have}")
    assert {v for _, _, v in have} == {"list", "watch"}
    assert rights(got[SERVE_SA]) == rights(granted(render(REPO / "base"))[SERVE_SA])


def test_the_audit_component_grants_what_the_audit_calls(tmp_path: Path) -> None:
    """components/audit turns the audit on and adds exactly its rights to magtape-sa:
    an installation without it cannot read every Pod or write PolicyReports."""
    rel = os.path.relpath(REPO, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/audit"]}))
    docs = render(tmp_path)
    assert audit_enabled(docs) and not audit_enabled(render(REPO / "base"))
    needed = calls_in_code()
    have = rights(granted(docs)[SERVE_SA])
    assert have == needed[SERVE_SA] | needed[AUDIT], (
        f"extra: {have - needed[SERVE_SA] - needed[AUDIT]}; "
        f"missing: {needed[SERVE_SA] | needed[AUDIT] - have}")
