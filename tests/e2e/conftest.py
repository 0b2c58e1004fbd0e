"""Fixtures of the end-to-end suite: one real cluster per session, MagTape installed in it.

Why it exists: the e2e tests need the whole chain the way a cluster runs it:
``kubectl kustomize overlays/quickstart`` applied to a real kube-apiserver,
``magtape init`` and ``magtape serve`` running with the tokens of the
ServiceAccounts the manifests give them (so the rendered RBAC is what is
tested), nginx with the rendered nginx.conf in front, and the API server
calling the rendered ValidatingWebhookConfiguration's Service through its
real egress path (cluster.py). The helpers are in support.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import Cluster, ClusterError, start
from e2e.podrun import LocalPod, Manifests, PodNetwork
from e2e.support import REPO, MagTape, SlackReceiver, apply, kubeconfig_for, wait_enforcing


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here `e2e`; run the install doc's test first (it installs MagTape
    the way docs/install.md says, on a cluster where nothing is installed yet)."""
    here = Path(__file__).parent
    ours = [i for i in items if Path(str(i.fspath)).is_relative_to(here)]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    first = [i for i in ours if Path(str(i.fspath)).name == "test_install_doc.py"]
    if first:
        others = [i for i in items if i not in first]
        at = next((n for n, i in enumerate(others) if i in ours), len(others))
        items[:] = [*others[:at], *first, *others[at:]]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        c = start()
    except ClusterError as exc:
        pytest.fail(f"could not start the e2e cluster: {exc}")
    try:
        yield c
    finally:
        c.stop()
        # MAGTAPE_E2E_KEEP=1 keeps the logs and state for a post-mortem.
        if not os.environ.get("MAGTAPE_E2E_KEEP"):
            shutil.rmtree(c.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def quickstart() -> Manifests:
    """``kubectl kustomize overlays/quickstart``, converted where 1.20 lacks an API version."""
    return Manifests.render(REPO / "overlays" / "quickstart").for_kubernetes_1_20()


@pytest.fixture(scope="session")
def magtape(cluster: Cluster, quickstart: Manifests,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[MagTape]:
    apply(cluster, quickstart.objects)
    network = PodNetwork()
    init_workload, init_template, init_container = quickstart.container_running("init")
    workload, template, serve_container = quickstart.container_running("serve")
    nginx_container = next(c for c in template["spec"]["containers"]
                           if c.get("command", [""])[0] == "nginx")
    pod = LocalPod(cluster, quickstart, workload, template, cluster.workdir / "pod", network)
    init_pod = pod if init_template is template else LocalPod(
        cluster, quickstart, init_workload, init_template, cluster.workdir / "init-pod",
        PodNetwork())
    slack = SlackReceiver(tmp_path_factory.mktemp("slack"))
    mt = MagTape(cluster, quickstart, pod, init_pod, init_container, serve_container,
                 nginx_container, kubeconfig_for(cluster, pod, serve_container),
                 kubeconfig_for(cluster, init_pod, init_container), slack)
    try:
        result = mt.run_init()
        assert result.returncode == 0, f"magtape init failed:\n{result.stderr}"
        mt.start()
        mt.route_service()
        wait_enforcing(cluster)
        yield mt
    finally:
        mt.stop()
        slack.close()
