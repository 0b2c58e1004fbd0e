"""Runs the containers of a rendered pod template as local processes, the way the kubelet would.

Why it exists: there is no kubelet here, yet the end-to-end suite must run
MagTape exactly as the shipped manifests say: with the environment the
Deployment gives each container (its ConfigMap, downward-API fields), the
files its volumes hold (the nginx.conf ConfigMap, the magtape-tls Secret
swapped atomically on renewal), the identity of its ServiceAccount, and the
nginx command line. Nothing here knows MagTape's names: containers are found
by the MagTape subcommand they run, identities by the pod spec holding them,
files by their volume mounts. The only deviations from a pod are local ones,
and each is explicit: mount paths become directories under the pod's work
directory, container ports become free loopback ports (``PodNetwork``), and
the process authenticates with a kubeconfig holding its ServiceAccount token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.cluster import Cluster, free_port
from kustomizing import render

Obj = dict[str, Any]
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# Kubernetes 1.20 serves older versions of these APIs only; the conversion is
# a plain apiVersion rename because the fields the manifests use are the same.
API_CONVERSIONS_1_20 = {
    ("policy/v1", "PodDisruptionBudget"): "policy/v1beta1",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "autoscaling/v2beta2",
}


@dataclass
class Manifests:
    """Rendered objects, plus what was converted for Kubernetes 1.20 (and why)."""

    objects: list[Obj]
    conversions: list[str] = field(default_factory=list)

    @classmethod
    def render(cls, target: Path) -> Manifests:
        return cls(render(target))

    def for_kubernetes_1_20(self) -> Manifests:
        objects, notes = [], []
        for obj in self.objects:
            new = API_CONVERSIONS_1_20.get((obj.get("apiVersion", ""), obj.get("kind", "")))
            if new:
                notes.append(f"{obj['kind']} {obj['metadata']['name']}: "
                             f"{obj['apiVersion']} -> {new} (not served by 1.20)")
                obj = {**obj, "apiVersion": new}
            objects.append(obj)
        return Manifests(objects, notes)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        for obj in self.objects:
            meta = obj["metadata"]
            if obj["kind"] == kind and meta["name"] == name and (
                    namespace is None or meta.get("namespace") == namespace):
                return obj
        raise AssertionError(f"the rendered manifests have no {kind} {namespace}/{name}")

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def pod_templates(self) -> Iterator[tuple[Obj, Obj]]:
        """(workload, pod template) for every object that makes Pods."""
        for obj in self.objects:
            spec = obj.get("spec") or {}
            template = spec.get("template") or (spec.get("jobTemplate") or {}).get(
                "spec", {}).get("template")
            if obj["kind"] == "Pod":
                yield obj, obj
            elif template:
                yield obj, template

    def container_running(self, subcommand: str) -> tuple[Obj, Obj, Obj]:
        """(workload, pod template, container) of the container running ``magtape <sub>``."""
        for workload, template in self.pod_templates():
            spec = template["spec"]
            for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                words = [*container.get("command", []), *container.get("args", [])]
                if words and (words[0] == subcommand or subcommand in words[1:2]) and (
                        not container.get("command") or "magtape" in words[0]):
                    return workload, template, container
        raise AssertionError(f"no rendered container runs `magtape {subcommand}`")


class PodNetwork:
    """The pod's ports, each a free loopback port here (one network namespace per pod)."""

    def __init__(self) -> None:
        self.ports: dict[int, int] = {}

    def local(self, pod_port: int) -> int:
        if pod_port not in self.ports:
            self.ports[pod_port] = free_port()
        return self.ports[pod_port]

    def address(self, value: str) -> str:
        """``HOST:PORT`` inside the pod -> ``127.0.0.1:<local>`` (only loopback here)."""
        _, _, port = value.rpartition(":")
        return f"127.0.0.1:{self.local(int(port))}"


@dataclass
class LocalPod:
    """A pod template's volumes as directories, and its containers' environments."""

    cluster: Cluster
    manifests: Manifests
    workload: Obj
    template: Obj
    root: Path
    network: PodNetwork
    pod_name: str = "magtape-e2e-0"

    def __post_init__(self) -> None:
        (self.root / "volumes").mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.root / "volumes"):
            directory.chmod(0o755)  # traversable by the pod's non-root user
        security = self.template["spec"].get("securityContext") or {}
        # As root, files get the pod's fsGroup as the kubelet gives them, and
        # nginx runs as the pod's user, so permission mistakes show here too.
        self.as_root = os.geteuid() == 0
        self.fs_group = security.get("fsGroup") if self.as_root else None
        self._generation = 0
        for volume in self.template["spec"].get("volumes", []):
            directory = self.volume_dir(volume["name"])
            directory.mkdir(exist_ok=True)
            if "configMap" in volume:
                cm = self.manifests.get("ConfigMap", volume["configMap"]["name"], self.namespace)
                self._project(directory, volume["configMap"], cm.get("data") or {},
                              volume["configMap"].get("defaultMode", 0o644))
            elif "emptyDir" in volume and self.as_root:
                uid = security.get("runAsUser", 0)
                os.chown(directory, uid, self.fs_group or 0)
        self.sync_secrets()

    @property
    def namespace(self) -> str:
        return str(self.workload["metadata"].get("namespace", "default"))

    def service_account(self, container: Obj) -> str | None:
        """The ServiceAccount whose token ``container`` sees, as the kubelet would mount it.

        A volume at the standard token path decides (a service-account-token
        Secret: that Secret's account; a projected serviceAccountToken: the
        pod's); without one, the pod's account unless automounting is off.
        """
        spec = self.template["spec"]
        pod_account = str(spec.get("serviceAccountName", "default"))
        mount = next((m for m in container.get("volumeMounts", [])
                      if m["mountPath"].rstrip("/") == TOKEN_MOUNT), None)
        if mount is None:
            automount = container.get("automountServiceAccountToken",
                                      spec.get("automountServiceAccountToken", True))
            return pod_account if automount is not False else None
        volume = next(v for v in spec.get("volumes", []) if v["name"] == mount["name"])
        if "secret" in volume:
            secret = self.manifests.get("Secret", volume["secret"]["secretName"], self.namespace)
            assert secret.get("type") == "kubernetes.io/service-account-token", secret
            return str(secret["metadata"]["annotations"]["kubernetes.io/service-account.name"])
        sources = (volume.get("projected") or {}).get("sources", [])
        assert any("serviceAccountToken" in s for s in sources), (
            f"volume {volume['name']} at {TOKEN_MOUNT} holds no ServiceAccount token")
        return pod_account

    def volume_dir(self, name: str) -> Path:
        return self.root / "volumes" / name

    # -- the kubelet's Secret volumes
    def sync_secrets(self) -> None:
        """Write every Secret volume from the cluster, swapping it atomically (``..data``)."""
        for volume in self.template["spec"].get("volumes", []):
            source = volume.get("secret")
            if source is None:
                continue
            got = self.cluster.kubectl("get", "secret", "-n", self.namespace,
                                       source["secretName"], "-o", "json", check=False)
            if got.returncode != 0:
                assert source.get("optional"), (
                    f"Secret {source['secretName']} is missing and not optional:\n{got.stderr}")
                continue
            data = {k: base64.b64decode(v) for k, v in
                    (json.loads(got.stdout).get("data") or {}).items()}
            self._project(self.volume_dir(volume["name"]), source, data,
                          source.get("defaultMode", 0o644))

    def _project(self, directory: Path, source: Obj, data: dict[str, Any], mode: int) -> None:
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        files = {i["path"]: data[i["key"]] for i in items if i["key"] in data}
        self._generation += 1
        version = directory / f"..{self._generation:04d}_{time.monotonic_ns()}"
        version.mkdir()
        for name, content in files.items():
            path = version / name
            path.write_bytes(content if isinstance(content, bytes) else str(content).encode())
            path.chmod(mode)
            if self.fs_group is not None:
                os.chown(path, 0, self.fs_group)
        version.chmod(0o755)
        link = directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, directory / "..data")
        for name in files:
            if not (directory / name).is_symlink():
                (directory / name).symlink_to(f"..data/{name}")

    # -- containers
    def mounts(self, container: Obj) -> list[tuple[str, Path]]:
        """(mountPath, local directory), longest path first so nested mounts win."""
        pairs = [(m["mountPath"].rstrip("/"), self.volume_dir(m["name"]))
                 for m in container.get("volumeMounts", [])]
        return sorted(pairs, key=lambda p: -len(p[0]))

    def localize(self, container: Obj, text: str) -> str:
        """Replace the container's mount paths in ``text`` by their local directories."""
        # One pass over all mounts (longest first): replacing them one after the
        # other would map a local directory under /tmp again through a /tmp mount.
        mounts = dict(self.mounts(container))
        if not mounts:
            return text
        pattern = "|".join(re.escape(m) for m in mounts) + r"(?=/|\b|$)"
        return re.sub(f"(?:{pattern})", lambda found: str(mounts[found.group(0)]), text)

    def environment(self, container: Obj) -> dict[str, str]:
        """The container's variables as the kubelet sets them (envFrom, env, downward API)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            assert ref is not None, f"unsupported envFrom in the rendered manifests: {source}"
            cm = self.manifests.get("ConfigMap", ref["name"], self.namespace)
            env.update({source.get("prefix", "") + k: v
                        for k, v in (cm.get("data") or {}).items()})
        fields = {"metadata.name": self.pod_name, "metadata.namespace": self.namespace}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "fieldRef" in (var.get("valueFrom") or {}):
                env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                ref = var["valueFrom"]["secretKeyRef"]
                got = self.cluster.kubectl("get", "secret", "-n", self.namespace, ref["name"],
                                           "-o", "json", check=False)
                if got.returncode == 0:
                    value = (json.loads(got.stdout).get("data") or {}).get(ref["key"])
                    if value is not None:
                        env[var["name"]] = base64.b64decode(value).decode()
                        continue
                assert ref.get("optional"), f"Secret {ref['name']} for {var['name']} is missing"
            else:
                raise AssertionError(f"unsupported env source in the manifests: {var}")
        return {k: self.localize(container, v) for k, v in env.items()}

    def run_as(self, container: Obj) -> dict[str, Any]:
        """Popen arguments that run a process as the container's user (when we are root)."""
        if not self.as_root:
            return {}
        merged = {**(self.template["spec"].get("securityContext") or {}),
                  **(container.get("securityContext") or {})}
        uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
        if uid is None:
            return {}
        groups = [self.fs_group] if self.fs_group is not None else []
        return {"user": uid, "group": gid if gid is not None else uid, "extra_groups": groups}
