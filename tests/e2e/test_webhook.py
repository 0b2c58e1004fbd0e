"""MagTape end to end: the shipped quickstart in a real kube-apiserver, driven with kubectl.

Why it exists: every other suite stops at a boundary (a fake API, a posted
AdmissionReview). Here the API server itself decides whether to call the
webhook (the rendered rules and namespaceSelector), calls it over TLS through
the rendered Service with the caBundle `magtape init` wrote, and MagTape
reaches back with the rights the rendered RBAC gives its ServiceAccounts: a
missing rule shows up as a failed test (and `test_no_permission_errors`
catches the ones MagTape only logs).

Kubernetes 1.20 differences, handled in tests/e2e/podrun.py: policy/v1
PodDisruptionBudgets and autoscaling/v2 HPAs, if an overlay has them, are
applied as policy/v1beta1 and autoscaling/v2beta2; namespaces have no
automatic ``kubernetes.io/metadata.name`` label (the webhook's NotIn on it
still matches the test namespaces, which is all these tests need). No kubelet
runs, so Pods are admitted and stored, never started.

The tests share one installation and use a namespace each; the order matters
only at the end, where MagTape is stopped and restarted.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import shlex
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, ClusterError, tail, wait_for
from e2e.podrun import Manifests
from e2e.support import OPT_IN, MagTape, apply

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "testing" / "deployments"
STATUS_ANNOTATION = "openpolicyagent.org/kube-mgmt-status"
POLICY_LABEL = {"openpolicyagent.org/policy": "rego"}
EVENT_REASON = "MagTapePolicyFailure"
# How the API server's refusals read in MagTape's logs ("403 Forbidden: ... is forbidden").
DENIED_BY_RBAC = re.compile(r"403 Forbidden|HTTP 403|\bis forbidden\b", re.IGNORECASE)

# The walk-through's denial, word for word (README.md, docs/walkthrough.md).
SEED_DENIAL = (
    '[FAIL] HIGH - Found privileged Security Context for container "test-deploy02" (MT2001), '
    '[FAIL] LOW - Liveness Probe missing for container "test-deploy02" (MT1001), '
    '[FAIL] LOW - Readiness Probe missing for container "test-deploy02" (MT1002), '
    '[FAIL] LOW - Resource limits missing (CPU/MEM) for container "test-deploy02" (MT1003), '
    '[FAIL] LOW - Resource requests missing (CPU/MEM) for container "test-deploy02" (MT1004)')
SEED_WARNINGS_03 = [
    'Warning: [FAIL] LOW - Liveness Probe missing for container "test-deploy03" (MT1001)',
    'Warning: [FAIL] LOW - Readiness Probe missing for container "test-deploy03" (MT1002)',
    'Warning: [FAIL] MED - Size limit of emptyDir volume "scratch" is not set (MT1009)',
]

BANNED_LABEL_POLICY = """\
package kubernetes.admission.e2e_banned_label

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "e2e-banned-label",
	"severity": "HIGH",
	"errcode": "MT9901",
	"targets": workloads.kinds,
}

matches if workloads.is_workload

deny contains info if {
	matches
	input.request.object.metadata.labels["e2e-banned"] == "true"
	info := messages.failure("e2e-banned-label", "HIGH", "MT9901",
		"Label e2e-banned is set", {})
}
"""


# --------------------------------------------------------------------------- helpers


def manifest(name: str, namespace: str, rename: str | None = None,
             **changes: Any) -> dict[str, Any]:
    """A testing/deployments manifest moved to ``namespace`` (and renamed)."""
    obj: dict[str, Any] = yaml.safe_load((DEPLOYMENTS / f"{name}.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    if rename:
        obj["metadata"]["name"] = rename
    for path, value in changes.items():
        target = obj
        *parents, leaf = path.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return obj


def namespace(cluster: Cluster, name: str, opted_in: bool = True,
              annotations: dict[str, str] | None = None) -> str:
    apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": OPT_IN if opted_in else {}, "annotations": annotations or {}}}])
    return name


def events(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", ns)["items"]
    return [e for e in items if e.get("reason") == EVENT_REASON]


def regarding(cluster: Cluster, ns: str) -> list[tuple[str, str]]:
    return sorted((e["involvedObject"]["kind"], e["involvedObject"]["name"])
                  for e in events(cluster, ns))


def wait_event(cluster: Cluster, ns: str, kind: str, name: str) -> None:
    try:
        wait_for(lambda: (kind, name) in regarding(cluster, ns), 30,
                 f"an Event about {kind} {ns}/{name}", interval=0.2)
    except ClusterError as exc:
        log = cluster.workdir / "pod" / "magtape-serve.log"
        pytest.fail(f"{exc}; Events there: {regarding(cluster, ns)}; MagTape's log:\n"
                    f"{tail(log)}")


def denial_of(magtape: MagTape, text: str) -> str:
    hook = magtape.webhook["webhooks"][0]["name"]
    return f'admission webhook "{hook}" denied the request: {text}'


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning: [FAIL]")]


def wait_denied(cluster: Cluster, obj: dict[str, Any], needle: str, timeout: float = 30) -> str:
    """Dry-run ``obj`` until the webhook denies it with ``needle`` in the message."""
    seen: list[str] = []

    def denied() -> bool:
        result = apply(cluster, [obj], "--dry-run=server", check=False)
        seen[:] = [result.stderr]
        return result.returncode != 0 and needle in result.stderr

    wait_for(denied, timeout, f"a denial containing {needle!r} (last: {seen})", interval=0.3)
    return seen[0]


# --------------------------------------------------------------------------- tests


def test_readme_walkthrough(magtape: MagTape, cluster: Cluster) -> None:
    """test1: allowed, denied with the seed's message, allowed with warnings; the Events."""
    apply(cluster, list(yaml.safe_load_all((REPO / "testing/namespaces/test1.yaml").read_text())))
    first = cluster.kubectl("apply", "-n", "test1", "-f", str(DEPLOYMENTS / "test-deploy01.yaml"))
    assert first.stdout.strip() == "deployment.apps/test-deploy01 created"
    assert warnings(first.stderr) == []

    second = cluster.kubectl("apply", "-n", "test1", "-f",
                             str(DEPLOYMENTS / "test-deploy02.yaml"), check=False)
    assert second.returncode != 0
    assert denial_of(magtape, SEED_DENIAL) in second.stderr, second.stderr
    assert second.stderr.rstrip().endswith(SEED_DENIAL), second.stderr

    third = cluster.kubectl("apply", "-n", "test1", "-f", str(DEPLOYMENTS / "test-deploy03.yaml"))
    assert third.stdout.strip() == "deployment.apps/test-deploy03 created"
    assert warnings(third.stderr) == SEED_WARNINGS_03

    wait_event(cluster, "test1", "Deployment", "test-deploy02")
    wait_event(cluster, "test1", "Deployment", "test-deploy03")
    table = cluster.kubectl("get", "events", "-n", "test1").stdout
    assert EVENT_REASON in table and "deployment/test-deploy02" in table, table
    notes = {e["involvedObject"]["name"]: e["message"] for e in events(cluster, "test1")}
    # The denial first, intact (remedies may follow it).
    assert notes["test-deploy02"].startswith(SEED_DENIAL), notes["test-deploy02"]
    assert "test-deploy01" not in notes


def test_server_dry_run_is_judged_but_leaves_no_event(magtape: MagTape,
                                                      cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-dryrun")
    result = apply(cluster, [manifest("test-deploy02", ns)], "--dry-run=server", check=False)
    assert result.returncode != 0 and denial_of(magtape, SEED_DENIAL) in result.stderr
    # Events go out in arrival order: once a later request's Event is there,
    # the dry run's would be too, had it made one.
    apply(cluster, [manifest("test-deploy03", ns)])
    wait_event(cluster, ns, "Deployment", "test-deploy03")
    assert [r for r in regarding(cluster, ns) if r[1] == "test-deploy02"] == []


def test_unlabelled_namespace_is_not_reviewed(magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-unlabelled", opted_in=False)
    result = apply(cluster, [manifest("test-deploy02", ns)])
    assert "created" in result.stdout and warnings(result.stderr) == []
    assert magtape.metric("magtape_admission_requests_total", namespace=ns) == 0


def test_controller_made_pods_are_reviewed_and_their_alerts_deduplicated(
        magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-controller")
    deduplicated = magtape.metric("magtape_notifications_total", channel="event",
                                  outcome="deduplicated")
    apply(cluster, [manifest("test-deploy03", ns, rename="scaled", spec__replicas=3)])

    def pods() -> list[dict[str, Any]]:
        return list(cluster.get_json("pods", "-n", ns)["items"])

    wait_for(lambda: len(pods()) == 3, 60, "the controller manager to create 3 Pods")
    for pod in pods():
        owners = pod["metadata"].get("ownerReferences") or []
        assert [o["kind"] for o in owners] == ["ReplicaSet"], owners
    # Each Pod was reviewed (it failed the same checks) and its alert dropped
    # as a repeat of its Deployment's.
    wait_for(lambda: magtape.metric("magtape_notifications_total", channel="event",
                                    outcome="deduplicated") >= deduplicated + 3,
             30, "three de-duplicated Pod alerts")
    apply(cluster, [manifest("test-deploy03", ns, rename="barrier")])
    wait_event(cluster, ns, "Deployment", "barrier")
    kinds = regarding(cluster, ns)
    assert ("Deployment", "scaled") in kinds
    assert [k for k in kinds if k[0] == "Pod"] == [], kinds
    assert kinds.count(("Deployment", "scaled")) == 1, kinds


def _policy_configmap(magtape: MagTape, name: str, source: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": magtape.namespace, "labels": POLICY_LABEL},
            "data": {f"{name}.rego": source}}


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    meta = cluster.get_json("configmap", "-n", namespace, name)["metadata"]
    raw = (meta.get("annotations") or {}).get(STATUS_ANNOTATION)
    return json.loads(raw) if raw else None


def test_new_policy_configmap_is_enforced_without_a_restart(magtape: MagTape,
                                                           cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-policy")
    serve_pid = magtape.procs[0].popen.pid
    apply(cluster, [_policy_configmap(magtape, "policy-e2e-banned-label",
                                      BANNED_LABEL_POLICY)])
    wait_for(lambda: _status(cluster, magtape.namespace, "policy-e2e-banned-label")
             == {"status": "ok"}, 60, "the new policy's status annotation")
    labelled = manifest("test-deploy01", ns, spec__template__metadata__labels={
        "app": "test-deploy01", "e2e-banned": "true"}, metadata__labels={"e2e-banned": "true"})
    stderr = wait_denied(cluster, labelled, "(MT9901)")
    assert "[FAIL] HIGH - Label e2e-banned is set (MT9901)" in stderr
    assert magtape.procs[0].popen.pid == serve_pid and magtape.procs[0].alive()
    # Every policy ConfigMap the distribution ships reports itself loaded.
    for cm in magtape.manifests.of_kind("ConfigMap"):
        if (cm["metadata"].get("labels") or {}).items() >= POLICY_LABEL.items():
            assert _status(cluster, magtape.namespace, cm["metadata"]["name"]) == {
                "status": "ok"}, cm["metadata"]["name"]


def test_broken_policy_is_reported_and_the_others_keep_enforcing(magtape: MagTape,
                                                                 cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-broken")
    broken = _policy_configmap(magtape, "policy-e2e-broken",
                               "package kubernetes.admission.e2e_broken\n\ndeny contains {\n")
    apply(cluster, [broken])
    status: list[dict[str, Any] | None] = []

    def reported() -> bool:
        status[:] = [_status(cluster, magtape.namespace, "policy-e2e-broken")]
        return bool(status[0]) and status[0].get("status") == "error"  # type: ignore[union-attr]

    wait_for(reported, 60, "the broken policy's error status")
    assert "policy-e2e-broken" in str(status[0]), status
    try:
        stderr = wait_denied(cluster, manifest("test-deploy02", ns), "(MT2001)")
        assert denial_of(magtape, SEED_DENIAL) in stderr
        assert _status(cluster, magtape.namespace, "policy-privileged-pod-check") == {
            "status": "ok"}
    finally:
        cluster.kubectl("delete", "configmap", "-n", magtape.namespace, "policy-e2e-broken")


def test_an_original_policy_configmap_is_enforced_after_magtape_policy_convert(
        magtape: MagTape, cluster: Cluster, tmp_path: Path) -> None:
    """The original's format (Rego v0) is refused naming the command; after the documented
    step (magtape policy convert --write on the manifest) it loads and enforces. Its errcode
    is changed so that its denial is told apart from the built-in MT2001's."""
    from magtape.cli import main as magtape_main

    ns = namespace(cluster, "e2e-original")
    source = (REPO / "tests/original/policy-privileged-pod-check.rego").read_text().replace(
        "MT2001", "MT9926")
    name = "policy-e2e-original"
    manifest_file = tmp_path / "original.yaml"
    manifest_file.write_text(yaml.safe_dump(_policy_configmap(magtape, name, source)))
    apply(cluster, [yaml.safe_load(manifest_file.read_text())])
    try:
        wait_for(lambda: (_status(cluster, magtape.namespace, name) or {}).get("status")
                 == "error", 60, "the v0 policy's error status")
        assert "magtape policy convert" in str(_status(cluster, magtape.namespace, name))
        assert magtape_main(["policy", "convert", "--write", str(manifest_file)]) == 0
        apply(cluster, [yaml.safe_load(manifest_file.read_text())])
        wait_for(lambda: _status(cluster, magtape.namespace, name) == {"status": "ok"}, 60,
                 "status ok after the conversion")
        stderr = wait_denied(cluster, manifest("test-deploy02", ns), "(MT9926)")
        assert "[FAIL] HIGH - Found privileged Security Context for container" in stderr
    finally:
        cluster.kubectl("delete", "configmap", "-n", magtape.namespace, name)


def test_a_policy_with_a_missing_builtin_is_refused_naming_it(magtape: MagTape,
                                                             cluster: Cluster) -> None:
    name = "policy-e2e-digest"
    source = ("package kubernetes.admission.e2e_digest\n\nimport rego.v1\n\n"
              'policy_metadata := {"name": "e2e-digest", "severity": "HIGH", '
              '"errcode": "MT9927", "targets": {"Pod"}}\n\n'
              "matches if input.request.kind.kind == \"Pod\"\n\n"
              'deny contains {"name": "e2e-digest", "severity": "HIGH", "errcode": "MT9927", '
              '"msg": "[FAIL] HIGH - digest (MT9927)"} if {\n'
              '\tcrypto.sha256(input.request.object.metadata.name) == "x"\n}\n')
    apply(cluster, [_policy_configmap(magtape, name, source)])
    try:
        wait_for(lambda: (_status(cluster, magtape.namespace, name) or {}).get("status")
                 == "error", 60, "the policy's error status")
        error = str((_status(cluster, magtape.namespace, name) or {}).get("error"))
        assert error.startswith(f"{name}/{name}.rego:10: the builtin `crypto.sha256` is not"), error
        assert "OPA-sidecar" in error
    finally:
        cluster.kubectl("delete", "configmap", "-n", magtape.namespace, name)


def test_namespace_annotation_change_flips_mt2002(magtape: MagTape, cluster: Cluster) -> None:
    key = "k8s.t-mobile.com/nodeportRange"
    ns = namespace(cluster, "e2e-nodeport", annotations={key: "30100-30120"})
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "np", "namespace": ns},
               "spec": {"type": "NodePort", "selector": {"app": "np"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 80,
                                   "nodePort": 30150}]}}

    def mt2002() -> bool:
        result = apply(cluster, [service], "--dry-run=server")
        return any("(MT2002)" in w for w in warnings(result.stderr))

    # The namespace reaches MagTape's replicated data through its watch.
    wait_for(mt2002, 30, "MT2002: nodePort 30150 is outside 30100-30120", interval=0.3)
    cluster.kubectl("annotate", "--overwrite", "namespace", ns, f"{key}=30100-30200")
    wait_for(lambda: not mt2002(), 30, "MT2002 to clear after widening the range", interval=0.3)
    cluster.kubectl("annotate", "--overwrite", "namespace", ns, f"{key}=30100-30120")
    wait_for(mt2002, 30, "MT2002 to return after narrowing the range", interval=0.3)


def test_tenant_slack_secret_routes_the_alert(magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-slack")
    url = f"https://127.0.0.1:{magtape.slack.port}/services/e2e/tenant"
    apply(cluster, [{"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "magtape-slack", "namespace": ns},
                     "data": {"webhook-url": base64.b64encode(url.encode()).decode()}}])
    result = apply(cluster, [manifest("test-deploy02", ns)], check=False)
    assert result.returncode != 0
    try:
        path, body = magtape.slack.posts.get(timeout=30)
    except queue.Empty:
        log = tail(magtape.logs / "magtape-serve.log")
        pytest.fail(f"no Slack alert within 30 s; MagTape's log:\n{log}")
    assert path == "/services/e2e/tenant"
    assert "MT2001" in json.dumps(body) and ns in json.dumps(body)


def test_magtape_init_twice_changes_nothing(magtape: MagTape, cluster: Cluster) -> None:
    secret_name = magtape.init_pod.environment(magtape.init_container)["MAGTAPE_TLS_SECRET"]

    def versions() -> tuple[str, str]:
        secret = cluster.get_json("secret", "-n", magtape.namespace, secret_name)
        hook = cluster.get_json("validatingwebhookconfiguration",
                                magtape.webhook["metadata"]["name"])
        return secret["metadata"]["resourceVersion"], hook["metadata"]["resourceVersion"]

    before = versions()
    for _ in range(2):
        result = magtape.run_init()
        assert result.returncode == 0, result.stderr
    assert versions() == before


def test_rotated_certificate_keeps_admissions_working(magtape: MagTape,
                                                      cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-rotation")
    denied = manifest("test-deploy02", ns)
    old_cert = magtape.served_certificate()
    secret_name = magtape.init_pod.environment(magtape.init_container)["MAGTAPE_TLS_SECRET"]
    # The CA's key is lost: `magtape init` must issue a new CA and certificate
    # while the webhook keeps trusting the old CA for the pods still serving it.
    cluster.kubectl("patch", "secret", "-n", magtape.namespace, secret_name, "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": "/data/ca.key"}]))
    result = magtape.run_init()
    assert result.returncode == 0, result.stderr
    wait_denied(cluster, denied, "(MT2001)")  # old certificate, bundle with both CAs
    magtape.pod.sync_secrets()  # the kubelet projects the renewed Secret
    wait_for(lambda: magtape.served_certificate() != old_cert, 30,
             "nginx to serve the renewed certificate")
    wait_denied(cluster, denied, "(MT2001)")  # new certificate, no restart
    assert all(p.alive() for p in magtape.procs)


def test_stopped_magtape_fails_open_in_quickstart_and_closed_in_production(
        magtape: MagTape, cluster: Cluster) -> None:
    ns = namespace(cluster, "e2e-down")
    name = magtape.webhook["metadata"]["name"]
    production = Manifests.render(REPO / "overlays" / "production")
    fail = production.get("ValidatingWebhookConfiguration", name)["webhooks"][0]["failurePolicy"]
    ignore = magtape.webhook["webhooks"][0]["failurePolicy"]
    assert (ignore, fail) == ("Ignore", "Fail")
    magtape.stop()
    try:
        result = apply(cluster, [manifest("test-deploy02", ns)], "--dry-run=server", check=False)
        assert result.returncode == 0 and warnings(result.stderr) == [], result.stderr

        def set_policy(value: str) -> None:
            cluster.kubectl("patch", "validatingwebhookconfiguration", name, "--type=json", "-p",
                            json.dumps([{"op": "replace", "path": "/webhooks/0/failurePolicy",
                                         "value": value}]))

        set_policy(fail)
        try:
            seen: list[str] = []

            def refused() -> bool:
                attempt = apply(cluster, [manifest("test-deploy01", ns)], "--dry-run=server",
                                check=False)
                seen[:] = [attempt.stderr]
                return attempt.returncode != 0 and "failed calling webhook" in attempt.stderr

            wait_for(refused, 30, f"the Fail policy to refuse requests ({seen})", interval=0.3)
        finally:
            set_policy(ignore)
    finally:
        magtape.start()
    wait_denied(cluster, manifest("test-deploy02", ns), "(MT2001)")


def test_no_permission_errors(magtape: MagTape, cluster: Cluster) -> None:
    """MagTape logs (rather than fails on) some API errors; none may be a 403, but for
    those logged while a test had restarted the API server on purpose (its authorizer
    refuses everyone until it has its roles again: Cluster.outages)."""
    def during_an_outage(line: str) -> bool:
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            return False
        return any(start <= at <= end + 1.0 for start, end in cluster.outages)

    problems = []
    for log in sorted(magtape.logs.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if DENIED_BY_RBAC.search(line) and not during_an_outage(line):
                problems.append(f"{log.name}: {line}")
    assert problems == [], "\n".join(problems)


@pytest.fixture(autouse=True)
def _alive(magtape: MagTape) -> None:
    for proc in magtape.procs:
        proc.alive()




def _doc_commands(step: str) -> list[str]:
    """The shell commands of docs/upgrading.md's numbered ``step``, continuation lines joined."""
    text = (REPO / "docs" / "upgrading.md").read_text()
    body = text.split(f"\n{step}. **", 1)[1].split(f"\n{int(step) + 1}. **", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", body, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [re.sub(r"\s+#.*$", "", c).strip() for c in joined.splitlines() if c.strip()]
    return commands


def test_upgrade_procedure_keeps_opted_in_namespaces_working(magtape: MagTape,
                                                             cluster: Cluster) -> None:
    """docs/upgrading.md steps 3-6 on a fail-closed install: nothing is refused meanwhile.

    Run as written, except where the e2e cluster differs: the old pods going
    (step 4) and the new ones starting are MagTape's processes stopping and
    starting, and the rendered production objects are converted for 1.20
    before `kubectl apply`.
    """
    ns = namespace(cluster, "e2e-upgrade")
    name = magtape.webhook["metadata"]["name"]
    allowed, denied = manifest("test-deploy01", ns), manifest("test-deploy02", ns)

    def admitted() -> bool:
        return apply(cluster, [allowed], "--dry-run=server", check=False).returncode == 0

    def policy() -> str:
        hook = cluster.get_json("validatingwebhookconfiguration", name)
        return str(hook["webhooks"][0]["failurePolicy"])

    cluster.kubectl("patch", "validatingwebhookconfiguration", name, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/webhooks/0/failurePolicy",
                                 "value": "Fail"}]))  # a production install
    try:
        (fail_open,) = _doc_commands("3")
        result = cluster.kubectl(*shlex.split(fail_open)[1:], check=False)
        assert result.returncode == 0 and policy() == "Ignore", result.stderr
        magtape.stop()  # step 4: the old pods are gone
        wait_for(admitted, 30, "requests to be admitted while no MagTape runs", interval=0.3)

        (pipeline,) = [c for c in _doc_commands("5") if " | " in c]
        stages = pipeline.split(" | ")
        assert (len(stages) == 3 and stages[0].startswith("kubectl kustomize")
                and stages[1].startswith("sed ") and stages[2].startswith("kubectl apply")), stages
        # The render and the edit as written; the apply after the 1.20 conversion.
        out = subprocess.run(["bash", "-c", " | ".join(stages[:2])], cwd=REPO,
                             capture_output=True, text=True, check=True, timeout=120).stdout
        step5 = Manifests([d for d in yaml.safe_load_all(out) if d]).for_kubernetes_1_20()
        apply(cluster, step5.objects)
        assert policy() == "Ignore" and admitted(), "step 5 must not fail closed yet"
        magtape.start()  # the new pods are Ready
        wait_denied(cluster, denied, "(MT2001)")

        (fail_closed,) = _doc_commands("6")
        assert fail_closed == "kubectl apply -k overlays/production", fail_closed
        production = Manifests.render(REPO / "overlays" / "production").for_kubernetes_1_20()
        apply(cluster, production.objects)
        assert policy() == "Fail"
        wait_denied(cluster, denied, "(MT2001)")
        assert admitted()
    finally:
        if not magtape.procs:
            magtape.start()
        apply(cluster, magtape.manifests.objects)  # back to the quickstart for what follows
        assert policy() == magtape.webhook["webhooks"][0]["failurePolicy"]
