"""The Kustomize distribution, rendered for real and held to its contract.

Why it exists: `kubectl apply -k overlays/<name>` (or Argo CD / Flux) is how
MagTape reaches a cluster, and none of it can be applied here. So every
overlay, and every component on top of the base and of production, is
rendered with the real kustomize (`kubectl kustomize`, or the standalone
binary hack/setup.sh installs), every object is validated against the
Kubernetes OpenAPI schemas (kubernetes-validate), and the promises the
manifests make are asserted on the rendered output: webhook guardrails,
least-privilege RBAC (no Secret list/watch), restricted security contexts,
production's fail-closed high availability, the airgapped overrides, the
wiring between nginx.conf, the Deployment and the Service, and that MagTape's
own checks pass on its own production manifests.

It also checks that `make policies` is deterministic and that the committed
base/policies/ is what a fresh render produces.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kustomizing import render_text as kustomize_build
from magtape.engine.sources import is_test_module
from magtape.namespaces import EXCLUDED
from magtape.namespaces import OPT_IN_LABEL as OPT_IN
from magtape.settings import Settings

REPO = Path(__file__).resolve().parent.parent
OVERLAYS = sorted(p.name for p in (REPO / "overlays").iterdir()
                  if (p / "kustomization.yaml").is_file())
COMPONENTS = sorted(p.name for p in (REPO / "components").iterdir()
                    if (p / "kustomization.yaml").is_file())
# Every overlay and the base, plus every component over the base and over
# production (but not those production already uses: a component applies once).
IN_PRODUCTION = {Path(c).name for c in yaml.safe_load(
    (REPO / "overlays" / "production" / "kustomization.yaml").read_text()).get("components", [])}
TARGETS = ["base", *(f"overlays/{o}" for o in OVERLAYS),
           *(f"base+{c}" for c in COMPONENTS),
           *(f"overlays/production+{c}" for c in COMPONENTS if c not in IN_PRODUCTION)]

# "A current Kubernetes version" and the oldest one we still claim to support.
K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]
# Custom resources kubernetes-validate has no schema for: the group must be one
# of these, and the object must at least be well-formed.
CRD_GROUPS = {"cert-manager.io", "monitoring.coreos.com"}

OPT_IN_LABEL = "k8s.t-mobile.com/magtape"
PROTECTED_NAMESPACES = {"kube-system", "kube-node-lease", "kube-public", "magtape-system"}
WEBHOOK_RESOURCES = {
    "": {"pods", "replicationcontrollers", "services"},
    "apps": {"deployments", "statefulsets", "daemonsets", "replicasets"},
    "batch": {"jobs", "cronjobs"},
    "policy": {"poddisruptionbudgets"},
}
POD_SPEC_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                  "ReplicationController"}
PRIVATE_REGISTRY = "registry.example.internal/magtape/"


# --------------------------------------------------------------------------- rendering


def _kustomize(directory: Path) -> str:
    return kustomize_build(directory)


@functools.cache
def render_text(target: str) -> str:
    """The YAML kustomize prints for ``target``: a directory, or ``<dir>+<component>``."""
    if "+" not in target:
        return _kustomize(REPO / target)
    base, component = target.split("+")
    # Components only render inside a Kustomization: write one that uses them.
    # kustomize refuses absolute paths, hence the relative ones.
    with tempfile.TemporaryDirectory(prefix="magtape-kustomize-") as tmp:
        rel = os.path.relpath(REPO, tmp)
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [f"{rel}/{base}"], "components": [f"{rel}/components/{component}"]}))
        return _kustomize(Path(tmp))


@pytest.fixture(scope="module", autouse=True)
def _rendered_up_front() -> None:
    """Every target rendered once before the tests, two at a time: each render is a
    kubectl process, so the second core works while the first waits."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(render_text, TARGETS))


@functools.cache
def render(target: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(target)) if d]


def objects(target: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(target) if o["kind"] == kind]


def one(target: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects(target, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment(target: str) -> dict[str, Any]:
    return one(target, "Deployment", "magtape")


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def container(target: str, name: str) -> dict[str, Any]:
    spec = deployment(target)["spec"]["template"]["spec"]
    found = [c for c in containers(spec) if c["name"] == name]
    assert len(found) == 1, f"{target}: no container {name}"
    return found[0]


def env_config(target: str) -> dict[str, str]:
    cms = [o for o in objects(target, "ConfigMap")
           if o["metadata"]["name"].startswith("magtape-env")]
    assert len(cms) == 1, f"{target}: expected one magtape-env ConfigMap"
    data: dict[str, str] = cms[0].get("data", {})
    return data


def env_vars(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


# --------------------------------------------------------------------------- schemas


@functools.cache
def schema_problems(text: str, version: str) -> tuple[str, ...]:
    """What the schema of ``version`` says about one object (its JSON text). Most
    objects appear unchanged in many targets (the policy ConfigMaps in all of
    them), so each distinct one is validated once."""
    obj = json.loads(text)
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        group = obj["apiVersion"].split("/")[0]
        if group not in CRD_GROUPS:
            return (f"{name}: no schema for {obj['apiVersion']} in {version}",)
        if not obj.get("metadata", {}).get("name") or "spec" not in obj:
            return (f"{name}: custom resource without metadata.name or spec",)
    except kubernetes_validate.ValidationError as exc:
        return (f"{name} ({version}): {exc.message} at "
                f"{'/'.join(str(p) for p in exc.path)}",)
    return ()


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schemas(target: str) -> None:
    problems = [problem for obj in render(target) for version in K8S_VERSIONS
                for problem in schema_problems(json.dumps(obj, sort_keys=True), version)]
    assert problems == []


@pytest.mark.parametrize("target", TARGETS)
def test_names_are_unique(target: str) -> None:
    ids = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
           for o in render(target)]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- webhook


@pytest.mark.parametrize("target", TARGETS)
def test_webhook_guardrails(target: str) -> None:
    vwc = one(target, "ValidatingWebhookConfiguration", "magtape-webhook")
    # The policy webhook; the second one, for MagTapeException objects, is
    # held to its own contract in tests/test_exceptions_manifests.py.
    hooks = {h["name"]: h for h in vwc["webhooks"]}
    assert set(hooks) == {"magtape.webhook.k8s.t-mobile.com",
                          "exceptions.magtape.webhook.k8s.t-mobile.com"}
    assert vwc["webhooks"][0]["name"] == "magtape.webhook.k8s.t-mobile.com"
    hook = hooks["magtape.webhook.k8s.t-mobile.com"]
    assert hook["name"] == "magtape.webhook.k8s.t-mobile.com"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert 1 <= hook["timeoutSeconds"] <= 3
    assert hook["clientConfig"]["service"] == {
        "name": "magtape-svc", "namespace": "magtape-system", "path": "/", "port": 443}
    assert "caBundle" not in hook["clientConfig"], "the caBundle is written at runtime"

    covered: dict[str, set[str]] = {}
    for rule in hook["rules"]:
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}, rule
        assert rule.get("scope") == "Namespaced", rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        for group in rule["apiGroups"]:
            covered.setdefault(group, set()).update(rule["resources"])
    for group, resources in WEBHOOK_RESOURCES.items():
        assert resources <= covered.get(group, set()), (group, covered)

    selector = hook["namespaceSelector"]
    assert set(selector) == {"matchExpressions"}, selector
    expressions = {e["key"]: e for e in selector["matchExpressions"]}
    assert len(expressions) == len(selector["matchExpressions"]) == 2, selector
    opt_in = expressions[OPT_IN_LABEL]
    assert opt_in["operator"] == "In" and opt_in["values"] == ["enabled"]
    excluded = expressions["kubernetes.io/metadata.name"]
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) >= PROTECTED_NAMESPACES
    # What MagTape itself counts as reviewed (notifications, the page) agrees.
    assert set(excluded["values"]) == EXCLUDED and (OPT_IN_LABEL, "enabled") == OPT_IN
    assert "objectSelector" not in hook


def test_base_and_quickstart_fail_open_production_fails_closed() -> None:
    policy = {t: one(t, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"]
              for t in ("base", "overlays/quickstart", "overlays/production",
                        "overlays/airgapped")}
    assert policy == {"base": "Ignore", "overlays/quickstart": "Ignore",
                      "overlays/production": "Fail", "overlays/airgapped": "Fail"}


# --------------------------------------------------------------------------- RBAC


def _rules(target: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for role in [*objects(target, "Role"), *objects(target, "ClusterRole")]:
        for rule in role.get("rules", []):
            yield role, rule


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_has_no_wildcards(target: str) -> None:
    for role, rule in _rules(target):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_only_get_magtape_slack_and_manage_magtape_tls(target: str) -> None:
    for role, rule in _rules(target):
        if "" not in rule["apiGroups"] or "secrets" not in rule["resources"]:
            continue
        where = f"{role['kind']} {role['metadata']['name']}: {rule}"
        verbs, names = set(rule["verbs"]), set(rule.get("resourceNames", []))
        assert not verbs & {"list", "watch", "delete", "deletecollection"}, where
        if role["kind"] == "ClusterRole":
            # Any namespace: exactly `get` of Secrets named magtape-slack.
            assert verbs == {"get"} and names == {"magtape-slack"}, where
        else:
            # magtape-system: the init step's own certificate Secret.
            assert role["metadata"]["namespace"] == "magtape-system", where
            if names:
                assert names == {"magtape-tls"} and verbs <= {"get", "update", "patch"}, where
                assert role["metadata"]["name"] == "magtape-init", where
            else:
                # `create` cannot be limited by name; it does not reveal data.
                assert verbs == {"create"}, where


@pytest.mark.parametrize("target", TARGETS)
def test_every_role_is_bound_to_the_magtape_service_account_only(target: str) -> None:
    roles = {(r["kind"], r["metadata"]["name"]) for r in
             [*objects(target, "Role"), *objects(target, "ClusterRole")]}
    bound = set()
    for binding in [*objects(target, "RoleBinding"), *objects(target, "ClusterRoleBinding")]:
        # magtape-init: the init step's own identity (tests/test_rbac.py);
        # magtape-ui: the page's (components/ui), read-only.
        assert binding["subjects"] in ([{"kind": "ServiceAccount", "name": sa,
                                         "namespace": "magtape-system"}]
                                       for sa in ("magtape-sa", "magtape-init", "magtape-ui")
                                       ), binding
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles, f"binding to a missing role: {ref}"
        bound.add((ref["kind"], ref["name"]))
    assert bound == roles, f"roles without bindings: {roles - bound}"


# --------------------------------------------------------------------------- pods


def _pod_specs(target: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in render(target):
        if obj["kind"] in POD_SPEC_KINDS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_restricted(target: str) -> None:
    specs = list(_pod_specs(target))
    assert specs, f"{target}: no workloads rendered"
    for workload, spec in specs:
        pod = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), (workload, flag)
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], workload
        for c in containers(spec):
            where = f"{target} {workload}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert not [p for p in c.get("ports", []) if "hostPort" in p], where
            assert c.get("resources", {}).get("requests", {}).keys() >= {"cpu", "memory"}, where
            assert c.get("resources", {}).get("limits", {}).keys() >= {"cpu", "memory"}, where
            if c not in spec.get("initContainers", []):
                assert c.get("livenessProbe") and c.get("readinessProbe"), where
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (workload, volume)


def test_magtape_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = one("base", "Namespace", "magtape-system")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert OPT_IN_LABEL not in labels


def test_image_uid_matches_the_pod_security_context() -> None:
    uid = re.search(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert uid, "the Dockerfile must set a numeric USER"
    spec = deployment("base")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == int(uid.group(1))


# --------------------------------------------------------------------------- wiring


def _settings_variables() -> set[str]:
    source = (REPO / "app" / "magtape" / "settings.py").read_text()
    names = set(re.findall(r'"(MAGTAPE_[A-Z0-9_]+)"', source))
    names.discard("MAGTAPE_DENY_VOLUME")  # the original's alias of MAGTAPE_DENY_LEVEL
    assert len(names) > 20, "could not find the settings' variable names"
    return names


def test_env_configmap_holds_every_setting_at_its_documented_default() -> None:
    data = env_config("base")
    assert Settings.from_env(data) == Settings(), "magtape-env must hold the defaults"
    pinned = set(env_vars(container("base", "magtape")))
    secret = {"MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT"}
    assert not set(data) & pinned, "set in both places: the container's value wins silently"
    missing = _settings_variables() - set(data) - pinned - secret
    assert missing == set(), f"settings neither in magtape-env nor on the container: {missing}"
    assert set(data) | pinned <= _settings_variables() | {"MAGTAPE_DENY_LEVEL"}


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_containers_get_the_in_cluster_wiring(target: str) -> None:
    for name in ("magtape", "magtape-init"):
        c = container(target, name)
        env = env_vars(c)
        assert env["MAGTAPE_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert (env["MAGTAPE_NAMESPACE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
                == "metadata.namespace")
        assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [
            o["metadata"]["name"] for o in objects(target, "ConfigMap")
            if o["metadata"]["name"].startswith("magtape-env")]
    assert container(target, "magtape-init")["args"] == ["init"]
    magtape = container(target, "magtape")
    env = {k: v.get("value") for k, v in env_vars(magtape).items()}
    assert magtape["args"] == ["serve"]
    assert env["MAGTAPE_POLICY_DISCOVERY"] == "true"
    assert env["MAGTAPE_METRICS_LISTEN"] == "0.0.0.0:9090"
    assert env["MAGTAPE_TLS_CERT_FILE"] == "/etc/magtape/tls/tls.crt"
    mounts = {m["mountPath"]: m["name"] for m in magtape["volumeMounts"]}
    assert mounts["/etc/magtape/tls"] == "magtape-tls"


def test_nginx_config_deployed_is_the_tested_file_and_matches_the_manifests() -> None:
    conf_text = (REPO / "base" / "nginx.conf").read_text()
    cm = [o for o in objects("base", "ConfigMap")
          if o["metadata"]["name"].startswith("magtape-nginx")]
    assert len(cm) == 1 and cm[0]["data"] == {"nginx.conf": conf_text}
    spec = deployment("base")["spec"]["template"]["spec"]
    nginx, magtape = container("base", "nginx"), container("base", "magtape")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in nginx["volumeMounts"]}

    # nginx reads this file, from the ConfigMap.
    conf_path = nginx["command"][nginx["command"].index("-c") + 1]
    assert volumes[mounts[str(Path(conf_path).parent)]]["configMap"]["name"] == cm[0][
        "metadata"]["name"]
    # ... listens where the container port and the Service point ...
    listen = re.search(r"^\s*listen (\d+) ssl;", conf_text, re.M)
    assert listen
    ports = {p["name"]: p["containerPort"] for p in nginx["ports"]}
    assert ports["https"] == int(listen.group(1))
    svc_ports = {p["name"]: p for p in one("base", "Service", "magtape-svc")["spec"]["ports"]}
    assert svc_ports["https"]["port"] == 443 and svc_ports["https"]["targetPort"] == "https"
    assert svc_ports["metrics"]["targetPort"] == "metrics"
    # ... proxies to where waitress listens ...
    upstream = re.search(r"^\s*server (\S+);", conf_text, re.M)
    assert upstream
    assert env_vars(magtape)["MAGTAPE_LISTEN"]["value"] == upstream.group(1)
    # ... reads the certificate from the Secret volume (not subPath: it must
    # see the kubelet's atomic updates) ...
    cert = re.search(r"default (\S+)/tls\.crt;", conf_text)
    assert cert
    tls_mount = next(m for m in nginx["volumeMounts"] if m["mountPath"] == cert.group(1))
    assert "subPath" not in tls_mount
    tls_volume = volumes[tls_mount["name"]]["secret"]
    assert tls_volume["secretName"] == "magtape-tls"
    # The Secret also holds the CA key (ca.key): only the serving pair is mounted.
    assert {i["key"] for i in tls_volume["items"]} == {"tls.crt", "tls.key"}
    # ... and writes only to its emptyDir.
    run_dir = re.search(r"^pid (\S+)/nginx\.pid;", conf_text, re.M)
    assert run_dir
    assert "emptyDir" in volumes[mounts[run_dir.group(1)]]
    # The kubelet probes the paths nginx answers itself.
    assert nginx["readinessProbe"]["httpGet"]["path"] == "/nginx-ready"


# --------------------------------------------------------------------------- overlays


def test_quickstart_is_one_replica_deny_low_events_on_slack_off() -> None:
    assert deployment("overlays/quickstart")["spec"]["replicas"] == 1
    env = env_config("overlays/quickstart")
    assert env["MAGTAPE_DENY_LEVEL"] == "LOW"
    assert Settings.from_env(env).notify.events_enabled is True
    assert Settings.from_env(env).slack.enabled is False


def _assert_production(target: str) -> None:
    dep = deployment(target)
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] >= 3
    hpa = one(target, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "magtape"}
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    pdb = one(target, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # Tainted nodes count as nodes holding no replica (nodeTaintsPolicy is not
    # set: kubectl refuses it before 1.26), so a required spread may allow one
    # replica per node: a rollout must be able to replace one before it surges.
    strict = [c for c in spec["topologySpreadConstraints"]
              if c["whenUnsatisfiable"] == "DoNotSchedule"]
    assert strict and "nodeTaintsPolicy" not in str(strict)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert spec["priorityClassName"] == one(target, "PriorityClass")["metadata"]["name"]
    settings = Settings.from_env(env_config(target))
    assert settings.slack.enabled is True
    assert "MAGTAPE_DENY_LEVEL" in env_config(target)
    url = env_vars(container(target, "magtape"))["MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT"]
    assert "value" not in url and url["valueFrom"]["secretKeyRef"]["key"] == "webhook-url"
    # No Slack URL literal anywhere in what goes to Git / the cluster.
    assert "hooks.slack.com/services" not in render_text(target)
    # (The init step's token Secret carries no data: the token controller fills it.)
    assert not [o for o in render(target) if o["kind"] == "Secret"
                and (o.get("data") or o.get("stringData"))]


def test_production_is_fail_closed_and_highly_available() -> None:
    _assert_production("overlays/production")


def test_airgapped_is_production_with_private_images_and_slack_base_override() -> None:
    _assert_production("overlays/airgapped")
    assert env_config("overlays/airgapped")["MAGTAPE_SLACK_WEBHOOK_URL_BASE"]
    assert not env_config("overlays/production")["MAGTAPE_SLACK_WEBHOOK_URL_BASE"]
    assert _public_images(render("overlays/airgapped")) == []
    # The rewrite lives in a component that must come last, and it names the
    # images of every component a user may add (opa-sidecar's OPA, kube-mgmt).
    kustomization = yaml.safe_load((REPO / "overlays/airgapped/kustomization.yaml").read_text())
    assert kustomization["components"][-1].endswith("components/private-registry")
    mapping = yaml.safe_load((REPO / "components/private-registry/kustomization.yaml")
                             .read_text())
    # The image's name: without its digest (name:tag@sha256:...), then its tag.
    used = {c["image"].split("@")[0].rsplit(":", 1)[0] for t in ("overlays/production",
                                                   *(f"overlays/production+{c}"
                                                     for c in COMPONENTS
                                                     if c not in IN_PRODUCTION))
            for _, spec in _pod_specs(t) for c in containers(spec)}
    assert used - {i["name"] for i in mapping["images"]} <= {
        i["newName"] for i in mapping["images"]}, "an image is not mirrored"


def _public_images(rendered: list[dict[str, Any]]) -> list[str]:
    found = []
    for obj in rendered:
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        pod = template.get("spec") if template else None
        for c in containers(pod) if pod else []:
            if not c["image"].startswith(PRIVATE_REGISTRY):
                found.append(f"{obj['kind']}/{obj['metadata']['name']}: {c['image']}")
    return found


@pytest.mark.parametrize("component", [c for c in COMPONENTS
                                       if c != "private-registry" and c not in IN_PRODUCTION])
def test_airgapped_with_any_component_pulls_only_private_images(component: str) -> None:
    """overlays/airgapped with a component added where its comment says: no public image."""
    text = (REPO / "overlays/airgapped/kustomization.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="magtape-airgapped-") as tmp:
        rel = os.path.relpath(REPO, tmp)
        data = yaml.safe_load(text)
        data["resources"] = [f"{rel}/overlays/production"]
        data["components"] = [f"{rel}/components/{component}",
                              *(f"{rel}/components/{Path(c).name}" for c in data["components"])]
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(data))
        for extra in (REPO / "overlays/airgapped").glob("*.env"):
            shutil.copy(extra, tmp)
        rendered = [d for d in yaml.safe_load_all(_kustomize(Path(tmp))) if d]
    assert _public_images(rendered) == []
    if component == "opa-sidecar":
        images = {c["image"] for _, spec in [(None, d["spec"]["template"]["spec"])
                                             for d in rendered if d["kind"] == "Deployment"]
                  for c in containers(spec)}
        assert any("/opa:" in i for i in images) and any("/kube-mgmt:" in i for i in images)


# --------------------------------------------------------------------------- components


def test_cert_manager_component_replaces_the_init_step() -> None:
    target = "base+cert-manager"
    spec = deployment(target)["spec"]["template"]["spec"]
    assert "initContainers" not in spec or spec["initContainers"] == []
    cert = one(target, "Certificate", "magtape-tls")
    assert cert["spec"]["secretName"] == "magtape-tls"
    assert "magtape-svc.magtape-system.svc" in cert["spec"]["dnsNames"]
    issuer = cert["spec"]["issuerRef"]
    assert one(target, issuer["kind"], issuer["name"])
    vwc = one(target, "ValidatingWebhookConfiguration")
    assert (vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "magtape-system/magtape-tls")
    names = {o["metadata"]["name"] for o in render(target)}
    assert not {"magtape-init", "magtape-init-rb", "magtape-init-crb"} & names
    for _, rule in _rules(target):
        assert "secrets" not in rule["resources"] or rule["verbs"] == ["get"], rule
        assert "validatingwebhookconfigurations" not in rule["resources"], rule


def test_opa_sidecar_component_switches_the_engine() -> None:
    target = "base+opa-sidecar"
    settings = Settings.from_env(env_config(target))
    assert settings.engine.kind.value == "opa"
    assert settings.engine.opa_url == "http://127.0.0.1:8181"
    opa, mgmt = container(target, "opa"), container(target, "kube-mgmt")
    assert "--addr=127.0.0.1:8181" in opa["args"], "OPA's API must stay on loopback"
    assert "--replicate-cluster=v1/namespaces" in mgmt["args"]
    env = env_vars(container(target, "magtape"))
    assert env["MAGTAPE_POLICY_DISCOVERY"]["value"] == "false"


# --------------------------------------------------------------------------- MagTape on itself


@pytest.mark.parametrize("target", [*(f"overlays/{o}" for o in OVERLAYS),
                                    *(f"overlays/production+{c}" for c in COMPONENTS
                                      if c not in IN_PRODUCTION)])
def test_magtape_passes_its_own_checks_at_deny_level_high(target: str) -> None:
    # What `kubectl kustomize overlays/production | magtape check --deny-level HIGH -` does.
    rendered = render_text(target)
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    result = subprocess.run([sys.executable, "-m", "magtape", "check", "--deny-level", "HIGH",
                             "-"], input=rendered, capture_output=True, text=True, env=env,
                            cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- policy ConfigMaps


# The original MagTape's policy ConfigMaps (name and key): an upgrade with
# `kubectl apply` must replace each in place, not load a second copy beside it.
ORIGINAL_POLICY_CONFIGMAPS = {
    "emptydir": "policy-emptydir-check",
    "host-path": "policy-host-path-check",
    "host-port": "policy-host-port-check",
    "liveness-probe": "policy-liveness-probe-check",
    "node-port-range": "policy-node-port-range-check",
    "pdb": "policy-pdb-check",
    "port-name-mismatch": "policy-port-name-mismatch",
    "privileged-pod": "policy-privileged-pod-check",
    "readiness-probe": "policy-readiness-probe-check",
    "resource-limits": "policy-resource-limits-check",
    "resource-requests": "policy-resource-requests-check",
    "singleton-pod": "policy-singleton-pod-check",
}


def test_policy_configmaps_carry_every_non_test_policy_module() -> None:
    rendered = {o["metadata"]["name"]: o for o in objects("base", "ConfigMap")
                if o["metadata"].get("labels", {}).get("openpolicyagent.org/policy") == "rego"}
    policies = REPO / "policies"
    sources = sorted(
        p.read_text() for p in policies.rglob("*.rego")
        if not is_test_module(p.name)
        and not any(part.startswith((".", "_")) for part in p.relative_to(policies).parts))
    assert sources, "no policies found"
    shipped = sorted(text for cm in rendered.values() for text in cm["data"].values())
    assert shipped == sources, "base/policies/ is stale: run `make policies`"
    for cm in rendered.values():
        assert cm["metadata"]["namespace"] == "magtape-system"
        assert cm["metadata"]["labels"]["app"] == "opa"
    for folder, name in ORIGINAL_POLICY_CONFIGMAPS.items():
        assert rendered[name]["data"][f"{name}.rego"] == (
            policies / folder / "policy.rego").read_text()
    assert rendered["magtape-opa-entrypoint"]["data"]["magtape.rego"] == (
        policies / "lib" / "main.rego").read_text()
    for folder in policies.iterdir():
        if (folder / "policy.rego").is_file() and folder.name not in ORIGINAL_POLICY_CONFIGMAPS:
            assert f"policy-{folder.name}" in rendered, folder.name


def _render_policies(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "hack" / "render_policies.py"), *args],
                          capture_output=True, text=True, cwd=REPO, check=False)


def test_policy_render_is_deterministic_and_committed(tmp_path: Path) -> None:
    for run in ("one", "two"):
        result = _render_policies("--output", str(tmp_path / run))
        assert result.returncode == 0, result.stderr
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    files = sorted(p.name for p in one_dir.iterdir())
    assert files == sorted(p.name for p in two_dir.iterdir())
    for name in files:
        assert (one_dir / name).read_bytes() == (two_dir / name).read_bytes(), name
    committed = REPO / "base" / "policies"
    assert files == sorted(p.name for p in committed.iterdir())
    check = _render_policies("--check")
    assert check.returncode == 0, check.stderr


def test_policy_render_check_names_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "policies"
    shutil.copytree(REPO / "base" / "policies", out)
    victim = next(p for p in sorted(out.iterdir()) if p.name != "kustomization.yaml")
    victim.write_text(victim.read_text() + "# hand edit\n")
    (out / "policy-removed.yaml").write_text("{}\n")
    result = _render_policies("--check", "--output", str(out))
    assert result.returncode == 1
    assert victim.name in result.stderr and "policy-removed.yaml" in result.stderr
    assert "make policies" in result.stderr
    # Rendering repairs it.
    assert _render_policies("--output", str(out)).returncode == 0
    assert _render_policies("--check", "--output", str(out)).returncode == 0


def test_policy_render_round_trips_awkward_sources(tmp_path: Path) -> None:
    src = tmp_path / "policies"
    sources = {
        "first-check/policy.rego": "package a\n\n\tdeny contains 1 if {\n  x := 1   \n}\n",
        "first-check/helpers.rego": "  package a.helpers",  # leading spaces, no final newline
        "lib/util.rego": "package lib\n\n\n",  # several trailing newlines
        "lib/nested/deep.rego": "package lib.deep\n",
        "lib/main.rego": "package magtape.main\n",
        "liveness-probe/policy.rego": "package kubernetes.admission.liveness_probe\n",
        "entry.rego": "package magtape\n",
    }
    ignored = {"first-check/policy_test.rego": "package t\n", ".hidden/x.rego": "package h\n",
               "first-check/samples/allowed-x.yaml": "kind: Pod\n"}
    for rel, text in {**sources, **ignored}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    out = tmp_path / "out"
    result = _render_policies("--policies", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr
    docs = {p.name: yaml.safe_load(p.read_text()) for p in out.iterdir()}
    assert docs["policy-first-check.yaml"]["data"] == {
        "policy-first-check.rego": sources["first-check/policy.rego"],
        "helpers.rego": sources["first-check/helpers.rego"]}
    assert docs["policy-lib.yaml"]["data"] == {"util.rego": sources["lib/util.rego"],
                                               "nested.deep.rego": sources["lib/nested/deep.rego"]}
    assert docs["magtape-opa-entrypoint.yaml"]["data"] == {
        "entry.rego": sources["entry.rego"], "magtape.rego": sources["lib/main.rego"]}
    assert docs["policy-liveness-probe-check.yaml"]["data"] == {
        "policy-liveness-probe-check.rego": sources["liveness-probe/policy.rego"]}
    assert docs["kustomization.yaml"]["resources"] == [
        "magtape-opa-entrypoint.yaml", "policy-first-check.yaml", "policy-lib.yaml",
        "policy-liveness-probe-check.yaml"]


def test_policy_render_refuses_what_cannot_become_a_configmap(tmp_path: Path) -> None:
    src = tmp_path / "policies"
    (src / "Bad_Name").mkdir(parents=True)
    (src / "Bad_Name" / "policy.rego").write_text("package x\n")
    result = _render_policies("--policies", str(src), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Bad_Name" in result.stderr and "lowercase" in result.stderr
    (src / "Bad_Name" / "policy.rego").unlink()
    (src / "Bad_Name").rmdir()
    (src / "binary").mkdir()
    (src / "binary" / "policy.rego").write_bytes(b"package x\x00\n")
    result = _render_policies("--policies", str(src), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "control character" in result.stderr


def test_ui_component_is_read_only_loopback_and_isolated() -> None:
    """components/ui: its own identity with get/list/watch only, no Secrets, loopback
    listener reached by port-forward, a ClusterIP Service, and no ingress at all."""
    target = "overlays/production+ui"
    ui = one(target, "Deployment", "magtape-ui")
    spec = ui["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "magtape-ui"
    [c] = spec["containers"]
    assert c["args"] == ["ui", "--listen", "127.0.0.1:8080"]
    assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [
        o["metadata"]["name"] for o in objects(target, "ConfigMap")
        if o["metadata"]["name"].startswith("magtape-env")]
    assert "/healthz" in " ".join(c["livenessProbe"]["exec"]["command"])
    assert "/readyz" in " ".join(c["readinessProbe"]["exec"]["command"])
    bound = {b["roleRef"]["name"] for b in [*objects(target, "RoleBinding"),
                                          *objects(target, "ClusterRoleBinding")]
             if b["subjects"][0]["name"] == "magtape-ui"}
    assert bound == {"magtape-ui-read", "magtape-ui-config"}
    for role, rule in _rules(target):
        if role["metadata"]["name"] in bound:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            assert "secrets" not in rule["resources"], rule
    config = one(target, "Role", "magtape-ui-config")
    assert config["metadata"]["namespace"] == "magtape-system"
    service = one(target, "Service", "magtape-ui")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    policy = one(target, "NetworkPolicy", "magtape-ui")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
