"""docs/break-glass.md, run as written against a real API server with MagTape gone.

Why it exists: a fail-closed webhook whose recovery steps are themselves
blocked bricks a cluster. Here production's ``failurePolicy: Fail`` is set,
MagTape's processes are stopped and its Deployment deleted, and then:

- requests in an opted-in namespace are refused (``failed calling webhook``);
- MagTape's own objects (its Deployment, policy ConfigMaps, Service, the
  audit Lease) can still be written, and ``magtape init`` (a new pod's first
  step) still succeeds: none of it is ever sent to MagTape;
- each break-glass step, taken from the document's ``sh`` blocks and run
  word for word (only ``<namespace>`` is filled in), lets requests through;
- the documented way back (re-apply the overlay, the init step writes the
  ``caBundle``) restores enforcement.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

from e2e.cluster import Cluster, wait_for
from e2e.podrun import Manifests
from e2e.support import REPO, MagTape, apply, wait_enforcing
from e2e.test_webhook import manifest, namespace

DOC = REPO / "docs" / "break-glass.md"


def step(number: int) -> list[str]:
    """The commands of the document's step ``number`` (its first ``sh`` block)."""
    text = DOC.read_text()
    section = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.S | re.M)
    assert section, f"docs/break-glass.md has no step {number}"
    block = re.search(r"```sh\n(.*?)```", section.group(0), re.S)
    assert block, f"step {number} has no sh block"
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def run(cluster: Cluster, command: str, **placeholders: str) -> subprocess.CompletedProcess[str]:
    """A documented kubectl command, as written but for its placeholders."""
    for name, value in placeholders.items():
        command = command.replace(f"<{name}>", value)
    assert "<" not in command, f"unfilled placeholder in {command!r}"
    words = shlex.split(command)
    assert words[0] == "kubectl", command
    return cluster.kubectl(*words[1:])


def refused(cluster: Cluster, ns: str) -> bool:
    attempt = apply(cluster, [manifest("test-deploy01", ns)], "--dry-run=server", check=False)
    return attempt.returncode != 0 and "failed calling webhook" in attempt.stderr


def admitted(cluster: Cluster, ns: str) -> bool:
    attempt = apply(cluster, [manifest("test-deploy01", ns)], "--dry-run=server", check=False)
    return attempt.returncode == 0


def test_break_glass_works_as_written_with_magtape_gone(magtape: MagTape, cluster: Cluster,
                                                        quickstart: Manifests) -> None:
    one, two = namespace(cluster, "e2e-glass-one"), namespace(cluster, "e2e-glass-two")
    name = magtape.webhook["metadata"]["name"]
    system = magtape.namespace
    cluster.kubectl("patch", "validatingwebhookconfiguration", name, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/webhooks/0/failurePolicy",
                                 "value": "Fail"}]))  # production's
    magtape.stop()
    try:
        # Step 2's change to MagTape's own Deployment goes through with MagTape
        # down (its rollout needs a kubelet, which the e2e cluster has not).
        set_env = step(2)[0]
        assert set_env.startswith("kubectl -n magtape-system set env deploy/magtape")
        run(cluster, set_env)
        cluster.kubectl("-n", system, "delete", "deploy/magtape")
        wait_for(lambda: refused(cluster, one) and refused(cluster, two), 30,
                 "requests to be refused with MagTape gone under failurePolicy Fail")

        # MagTape's own objects are never sent to MagTape, so its repair is never blocked.
        own = [o for o in quickstart.objects if o["kind"] in ("Deployment", "ConfigMap",
                                                               "Service", "Namespace")]
        assert {o["kind"] for o in own} == {"Deployment", "ConfigMap", "Service", "Namespace"}
        apply(cluster, own, "--dry-run=server")
        apply(cluster, [{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "magtape-audit", "namespace": system},
                         "spec": {"holderIdentity": "e2e", "leaseDurationSeconds": 15}}])
        cluster.kubectl("-n", system, "delete", "lease/magtape-audit")  # leave no holder
        # A new pod's start: `magtape init` (Secret, caBundle) needs no MagTape either.
        result = magtape.run_init()
        assert result.returncode == 0, result.stderr

        # Step 1: one namespace out.
        for command in step(1):
            run(cluster, command, namespace=one)
        wait_for(lambda: admitted(cluster, one), 30, "step 1 to let namespace one through")
        assert refused(cluster, two), "step 1 must affect only its namespace"

        # Step 3: fail open.
        for command in step(3):
            run(cluster, command)
        wait_for(lambda: admitted(cluster, two), 30, "step 3 to let requests through")

        # Step 4: no webhook at all.
        for command in step(4):
            run(cluster, command)
        assert cluster.kubectl("get", "validatingwebhookconfiguration", name,
                               check=False).returncode != 0
        assert admitted(cluster, two)
    finally:
        # The way back, as the document says: re-apply the overlay (here the
        # quickstart, converted for 1.20), let the init step write the caBundle.
        apply(cluster, quickstart.objects)
        result = magtape.run_init()
        assert result.returncode == 0, result.stderr
        magtape.start()
        cluster.kubectl("label", "namespace", one, "k8s.t-mobile.com/magtape=enabled",
                        "--overwrite")
    wait_enforcing(cluster)
