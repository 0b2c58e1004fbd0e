"""Opting a namespace in never breaks what already runs: rollouts, re-created Pods, Jobs.

Why it exists: the controller manager, not a user, creates a Deployment's
ReplicaSets, a ReplicaSet's, StatefulSet's, DaemonSet's and Job's Pods and a
CronJob's Jobs. Before inheritance (docs/exceptions.md) a privileged
Deployment that predated the opt-in label could be updated, but its new
ReplicaSet was denied: the rollout stalled, and a deleted Pod never came
back. Here, against the real API server and controller manager (which sends
each controller's requests as its own ServiceAccount, as kubeadm clusters
do), workloads that failed MT2001 are created in a namespace before it is
labelled; ``magtape audit`` previews the opt-in (denied if created anew,
inherited by what runs); afterwards their rollouts and re-creations go through, while a new
privileged workload and a user's privileged Pod or Job with a forged
ownerReference are still denied.

No kubelet runs: Pods are created and stored, never started. A DaemonSet
needs a Node to make Pods for, so one Node object is registered (and removed
at the end), which the DaemonSet tolerates being not ready; a StatefulSet
uses ``podManagementPolicy: Parallel``, as its OrderedReady rollout would
wait for Pods to become ready. A CronJob's Job
appears when a schedule time is due: the CronJob starts suspended, and is
resumed with a ``lastScheduleTime`` in the past, so the 1.20 controller (which
looks every 10 s) starts the missed run at once instead of at the next minute.
Kubernetes 1.20 serves CronJob only as batch/v1beta1, which MagTape's
batch/v1 webhook rule does not match; a new CronJob is therefore not
reviewed here, its Jobs are.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.cluster import Cluster, wait_for
from e2e.support import MAGTAPE, OPT_IN, MagTape, apply, container

NS = "e2e-optin"
NODE = "e2e-optin-node"
PRIV = '[FAIL] HIGH - Found privileged Security Context for container "{}" (MT2001)'
EXISTING = "[already failing before this update: allowed]"
DEADLINE = 60.0


def template(app: str, restart: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container(app, privileged=True)]}
    if restart:
        spec["restartPolicy"] = restart
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def workloads() -> list[dict[str, Any]]:
    # A Node without a kubelet keeps the not-ready taint the API server gives new Nodes.
    ds_template = template("legacy-ds")
    ds_template["spec"]["tolerations"] = [{"key": "node.kubernetes.io/not-ready",
                                           "operator": "Exists", "effect": "NoSchedule"}]
    def sel(app: str) -> dict[str, Any]:
        return {"matchLabels": {"app": app}}

    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "legacy-deploy", "namespace": NS},
         "spec": {"replicas": 1, "selector": sel("legacy-deploy"),
                  "template": template("legacy-deploy")}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": "legacy-sts", "namespace": NS},
         "spec": {"replicas": 1, "serviceName": "legacy-sts", "podManagementPolicy": "Parallel",
                  "selector": sel("legacy-sts"), "template": template("legacy-sts")}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "legacy-ds", "namespace": NS},
         "spec": {"selector": sel("legacy-ds"), "template": ds_template}},
        {"apiVersion": "batch/v1beta1", "kind": "CronJob",
         "metadata": {"name": "legacy-cron", "namespace": NS},
         "spec": {"schedule": "*/5 * * * *", "suspend": True,
                  "jobTemplate": {"spec": {"template": template("legacy-cron", "Never")}}}},
    ]


def items(cluster: Cluster, resource: str) -> list[dict[str, Any]]:
    return list(cluster.get_json(resource, "-n", NS)["items"])


def owned_by(cluster: Cluster, resource: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [o for o in items(cluster, resource)
            if any(r.get("uid") == uid and r.get("controller")
                   for r in o["metadata"].get("ownerReferences") or [])]


def get(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.get_json(resource, "-n", NS, name)
    return obj


def image_of(obj: dict[str, Any]) -> str:
    spec = obj["spec"]
    containers = spec["containers"] if "containers" in spec else spec["template"]["spec"][
        "containers"]
    return str(containers[0]["image"])


def eventually(predicate: Any, what: str, cluster: Cluster) -> None:
    """Poll with a deadline; on timeout, say what the namespace's Events said."""
    try:
        wait_for(predicate, DEADLINE, what, interval=0.2)
    except Exception as exc:
        notes = [f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: "
                 f"{e.get('reason')}: {e.get('message')}" for e in items(cluster, "events")]
        pytest.fail(f"{exc}; Events in {NS}:\n" + "\n".join(notes[-30:]))


def recreated(cluster: Cluster, owner: dict[str, Any]) -> None:
    """Delete the owner's Pod; its controller must create a new one that MagTape admits."""
    pods = owned_by(cluster, "pods", owner)
    assert pods, f"{owner['kind']} {owner['metadata']['name']} has no Pod"
    gone = pods[0]["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "-n", NS, pods[0]["metadata"]["name"], "--wait=false")
    eventually(lambda: any(p["metadata"]["uid"] != gone
                           for p in owned_by(cluster, "pods", owner)),
               f"a new Pod of {owner['kind']} {owner['metadata']['name']}", cluster)


def forged_pod(owner: dict[str, Any], app: str) -> dict[str, Any]:
    """A user's privileged Pod claiming ``owner`` as its controller (right uid and all)."""
    meta = owner["metadata"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"forged-{app}", "namespace": NS, "labels": {"app": app},
                         "ownerReferences": [{
                             "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                             "name": meta["name"], "uid": meta["uid"], "controller": True}]},
            "spec": {"containers": [container(app, privileged=True)]}}


def assert_denied(cluster: Cluster, obj: dict[str, Any], container_name: str) -> None:
    result = apply(cluster, [obj], check=False)
    assert result.returncode != 0, result.stdout
    assert "denied the request" in result.stderr and PRIV.format(container_name) in \
        result.stderr, result.stderr


def new_like(kind: str) -> dict[str, Any]:
    """A new workload with the legacy one's spec, under another name."""
    obj = next(o for o in workloads() if o["kind"] == kind)
    return {**obj, "metadata": {"name": "new-privileged", "namespace": NS}}


def preview_opt_in(cluster: Cluster) -> None:
    """docs/install.md's first step: ``magtape audit -n NS`` before the label says that the
    workloads would be denied as new objects but keep rolling out (their controllers'
    objects inherit), from the real API server's objects."""
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    run = subprocess.run([MAGTAPE, "audit", "-n", NS, "-o", "json"], env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 1, run.stderr  # they would be denied if created anew
    [preview] = json.loads(run.stdout)["optIn"]
    assert preview["namespace"] == NS and preview["optedIn"] is False
    inherited = sorted(r["kind"] for r in preview["inheritedByRunning"])
    assert inherited == ["DaemonSet", "Deployment", "StatefulSet"], preview  # 1.20: no CronJob
    assert preview["deniedIfRecreated"] == [], preview


@pytest.fixture(scope="module")
def legacy(magtape: MagTape, cluster: Cluster) -> Iterator[dict[str, dict[str, Any]]]:
    """Privileged workloads created, and running their Pods, before the opt-in label."""
    apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}])
    created = workloads()
    apply(cluster, created)
    found = {o["kind"]: get(cluster, o["kind"].lower(), o["metadata"]["name"]) for o in created}
    eventually(lambda: bool(owned_by(cluster, "replicasets", found["Deployment"])),
               "the Deployment's ReplicaSet", cluster)
    owners = [owned_by(cluster, "replicasets", found["Deployment"])[0], found["StatefulSet"],
              found["DaemonSet"]]
    eventually(lambda: all(owned_by(cluster, "pods", o) for o in owners),
               "the workloads' Pods before the opt-in", cluster)
    preview_opt_in(cluster)
    cluster.kubectl("label", "namespace", NS, *(f"{k}={v}" for k, v in OPT_IN.items()))
    try:
        yield found
    finally:
        cluster.kubectl("delete", "node", NODE, "--wait=false", check=False)


def test_deployment_rolls_out_and_its_pods_come_back(legacy: dict[str, dict[str, Any]],
                                                     cluster: Cluster) -> None:
    deploy = legacy["Deployment"]
    result = cluster.kubectl("set", "image", "-n", NS, "deployment/legacy-deploy",
                             "legacy-deploy=nginx:1.28")
    assert f"Warning: {PRIV.format('legacy-deploy')} {EXISTING}" in result.stderr, result.stderr

    def rolled_out() -> bool:
        new = [rs for rs in owned_by(cluster, "replicasets", deploy)
               if image_of(rs) == "nginx:1.28"]
        return bool(new) and new[0]["spec"]["replicas"] >= 1 and len(
            owned_by(cluster, "pods", new[0])) == new[0]["spec"]["replicas"]

    eventually(rolled_out, "the new ReplicaSet (nginx:1.28) and its Pods", cluster)
    new_rs = next(rs for rs in owned_by(cluster, "replicasets", deploy)
                  if image_of(rs) == "nginx:1.28")
    assert all(image_of(p) == "nginx:1.28" for p in owned_by(cluster, "pods", new_rs))
    # Reported, not hidden: the new ReplicaSet's Event says where its failure comes from.
    inherited = (f"{PRIV.format('legacy-deploy')} [inherited from Deployment "
                 f"{NS}/legacy-deploy: already failing]")
    eventually(lambda: any(e["involvedObject"]["name"] == new_rs["metadata"]["name"]
                           and str(e.get("message", "")).startswith(inherited)
                           for e in items(cluster, "events")),
               "an Event saying the new ReplicaSet inherited its failure", cluster)
    recreated(cluster, new_rs)
    assert_denied(cluster, new_like("Deployment"),
                  "legacy-deploy")
    assert_denied(cluster, forged_pod(new_rs, "legacy-deploy"), "legacy-deploy")


@pytest.mark.parametrize(("kind", "name"), [("StatefulSet", "legacy-sts"),
                                            ("DaemonSet", "legacy-ds")])
def test_a_pod_owner_rolls_out_and_its_pod_comes_back(legacy: dict[str, dict[str, Any]],
                                                      cluster: Cluster, kind: str,
                                                      name: str) -> None:
    """A StatefulSet's and a DaemonSet's Pods are their owner's own (no ReplicaSet)."""
    owner = legacy[kind]
    cluster.kubectl("set", "image", "-n", NS, f"{kind.lower()}/{name}", f"{name}=nginx:1.28")
    eventually(lambda: [image_of(p) for p in owned_by(cluster, "pods", owner)] == ["nginx:1.28"],
               f"the {kind}'s Pod re-created at nginx:1.28", cluster)
    recreated(cluster, owner)
    assert_denied(cluster, new_like(kind), name)
    assert_denied(cluster, forged_pod(owner, name), name)


def test_cronjob_starts_its_jobs_and_their_pods(legacy: dict[str, dict[str, Any]],
                                                cluster: Cluster) -> None:
    cron = legacy["CronJob"]
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=6)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    cluster.kubectl("patch", "cronjob", "-n", NS, "legacy-cron", "--subresource=status",
                    "--type=merge", "-p", f'{{"status":{{"lastScheduleTime":"{past}"}}}}')
    cluster.kubectl("patch", "cronjob", "-n", NS, "legacy-cron", "--type=merge",
                    "-p", '{"spec":{"suspend":false}}')
    eventually(lambda: bool(owned_by(cluster, "jobs", cron)), "the CronJob's Job", cluster)
    job = owned_by(cluster, "jobs", cron)[0]
    eventually(lambda: bool(owned_by(cluster, "pods", job)), "the Job's Pod", cluster)
    cluster.kubectl("patch", "cronjob", "-n", NS, "legacy-cron", "--type=merge",
                    "-p", '{"spec":{"suspend":true}}')
    # A user's Job claiming the CronJob, and a user's Job without one: judged in full.
    forged = {"apiVersion": "batch/v1", "kind": "Job",
              "metadata": {"name": "forged-job", "namespace": NS, "ownerReferences": [{
                  "apiVersion": cron["apiVersion"], "kind": "CronJob",
                  "name": cron["metadata"]["name"], "uid": cron["metadata"]["uid"],
                  "controller": True}]},
              "spec": {"template": template("legacy-cron", "Never")}}
    assert_denied(cluster, forged, "legacy-cron")
    plain = {**forged, "metadata": {"name": "new-privileged", "namespace": NS}}
    assert_denied(cluster, plain, "legacy-cron")
