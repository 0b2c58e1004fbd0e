"""The compliance page against the real kube-apiserver, in Chromium: every view, links, axe,
screenshots, and the API server going away and coming back.

Why it exists: tests/test_ui.py feeds the model by hand; here ``magtape ui``
runs as its component's Deployment would (components/ui over the quickstart:
its environment, and the token of its own ServiceAccount, so the component's
read-only RBAC is what is tested), watching what the cluster holds. The
cluster holds what MagTape itself wrote: a PolicyReport from a replica with
``MAGTAPE_AUDIT=on`` (objects failing, warned, and one exempted by a
MagTapeException) and the Event of a Deployment the webhook denied.

A screenshot of each view goes to the artifact directory
(``MAGTAPE_ARTIFACTS``, else the session's work directory) and, with
``MAGTAPE_UPDATE_DOCS=1``, into docs/ui/ for docs/ui.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from browser import chromium, full_page_screenshot, navigate, serious_violations
from e2e.cluster import Cluster, ClusterError, free_port, wait_for
from e2e.podrun import LocalPod, Manifests, PodNetwork
from e2e.support import MAGTAPE, REPO, MagTape, Proc, apply, kubeconfig_for, wait_enforcing
from e2e.test_audit_e2e import Replica, crd, deployment, results  # noqa: F401 (crd: fixture)
from e2e.test_exceptions_e2e import exception
from e2e.test_webhook import namespace

NS = "e2e-ui"
PSS = "k8s.t-mobile.com/pod-security"
VIEWS = ("namespaces", "checks", "admissions", "exceptions")


@pytest.fixture(scope="module")
def ui_manifests() -> Manifests:
    """The quickstart with components/ui, rendered as a user's overlay would use it."""
    with tempfile.TemporaryDirectory(prefix="magtape-ui-") as tmp:
        rel = os.path.relpath(REPO, tmp)
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [f"{rel}/overlays/quickstart"],
            "components": [f"{rel}/components/ui"]}))
        return Manifests.render(Path(tmp)).for_kubernetes_1_20()


@pytest.fixture(scope="module")
def cluster_state(magtape: MagTape, cluster: Cluster, crd: None) -> Iterator[None]:  # noqa: F811
    """Objects failing and warned, one exempted, one denial; the audit's report of them."""
    ns = namespace(cluster, NS, opted_in=False)
    apply(cluster, [deployment("priv", ns, privileged=True),
                    deployment("nolimits", ns, limits=False),
                    deployment("legacy-agent", ns, privileged=True),
                    deployment("fine", ns)])
    expires = datetime.now(UTC) + timedelta(days=10, hours=1)
    legacy = exception("legacy-agents", ns, expires)
    legacy["spec"]["ticket"] = "OPS-1234"
    apply(cluster, [legacy])
    namespace(cluster, ns, opted_in=True)
    # A Pod Security level the view shows; "privileged" applies no MT30xx check, so
    # MT2001 still reports the privileged containers (docs/pod-security.md, overlaps).
    cluster.kubectl("label", "namespace", ns, f"{PSS}=privileged", "--overwrite")
    denied = apply(cluster, [deployment("blocked", ns, privileged=True)], check=False)
    assert denied.returncode != 0 and "(MT2001)" in denied.stderr, denied.stderr
    warned = apply(cluster, [deployment("unlimited", ns, limits=False)])
    assert "(MT1003)" in warned.stderr, warned.stderr  # admitted with a warning
    audit = Replica(magtape, "audit-ui")
    try:
        expected = {("priv", "MT2001", "fail"), ("nolimits", "MT1003", "warn"),
                    ("unlimited", "MT1003", "warn"), ("legacy-agent", "MT2001", "skip")}
        wait_for(lambda: audit.proc.alive() and results(cluster, ns) == expected, 90,
                 f"the PolicyReport of {ns} (last: {results(cluster, ns)})", interval=0.3)
        yield
    finally:
        audit.proc.stop()


@pytest.fixture(scope="module")
def ui(magtape: MagTape, cluster: Cluster, ui_manifests: Manifests,
       cluster_state: None) -> Iterator[str]:
    """``magtape ui`` with its container's environment and its ServiceAccount's token."""
    ours = [o for o in ui_manifests.objects
            if (o["metadata"].get("labels") or {}).get("app") == "magtape-ui"
            and o["kind"] != "Deployment"]  # no kubelet: its process runs here instead
    apply(cluster, ours)
    workload, template, container = ui_manifests.container_running("ui")
    pod = LocalPod(cluster, ui_manifests, workload, template, cluster.workdir / "ui-pod",
                   PodNetwork(), pod_name="magtape-ui-e2e-0")
    port = free_port()
    args = [a if a != "127.0.0.1:8080" else f"127.0.0.1:{port}" for a in container["args"]]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(pod.root),
           "KUBECONFIG": str(kubeconfig_for(cluster, pod, container)),
           **pod.environment(container)}
    log = pod.root / "magtape-ui.log"
    with log.open("ab") as sink:
        proc = Proc("magtape-ui", subprocess.Popen(
            [MAGTAPE, *args], env=env, stdout=sink, stderr=sink, cwd=pod.root), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.alive() and magtape.http_get(port, "/readyz")[0] == 200, 60,
                 "magtape ui /readyz")
        yield url
    finally:
        proc.stop()


def ui_log(cluster: Cluster) -> str:
    return (cluster.workdir / "ui-pod" / "magtape-ui.log").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def artifacts(cluster: Cluster) -> Path:
    out = Path(os.environ.get("MAGTAPE_ARTIFACTS") or cluster.workdir / "artifacts") / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


def shot(browser: WebDriver, cluster: Cluster, name: str) -> None:
    path = artifacts(cluster) / f"{name}.png"
    full_page_screenshot(browser, path)
    if os.environ.get("MAGTAPE_UPDATE_DOCS") == "1":
        (REPO / "docs" / "ui").mkdir(exist_ok=True)
        shutil.copy(path, REPO / "docs" / "ui" / f"{name}.png")


def row(browser: WebDriver, css: str) -> str:
    return " ".join(browser.find_element(By.CSS_SELECTOR, css).text.split())


def eventually_shows(browser: WebDriver, url: str, css: str, what: str,
                     timeout: float = 60, text: str | None = None) -> None:
    """The page reflects the watches' state a moment after the cluster changes: reload
    until ``css`` matches (and, given ``text``, its first match reads exactly that)."""
    seen: list[str] = []

    def present() -> bool:
        browser.get(url)
        found = browser.find_elements(By.CSS_SELECTOR, css)
        if not found or text is None:
            return bool(found)
        seen[:] = [" ".join(found[0].text.split())]
        return seen[0] == text
    try:
        wait_for(present, timeout, what, interval=0.5)
    except ClusterError as exc:  # say what the page showed instead
        raise AssertionError(f"{exc}; it last read {seen[0]!r}" if seen else str(exc)) from None


def test_every_view_shows_the_cluster_and_links_work(ui: str, browser: WebDriver,
                                                     cluster: Cluster) -> None:
    # Namespaces: the failing, warned and exempted counts, the deny level and PSS label.
    # (Each of the page's watches syncs on its own: the row can appear before its
    # counts are complete, so the test waits for the counts, not for the row.)
    eventually_shows(browser, f"{ui}/namespaces?namespace={NS}", f'tr.ns[data-namespace="{NS}"]',
                     "the namespace's row with its counts",
                     text=f"{NS} 1 (high 1) 2 (low 2) 1 (high 1) LOW privileged")
    assert serious_violations(browser) == []
    browser.get(f"{ui}/namespaces")
    shot(browser, cluster, "namespaces")
    navigate(browser, lambda: browser.find_element(By.LINK_TEXT, NS).click())  # its results

    # Checks: the namespace's results, the exception beside the result it covers.
    assert browser.current_url == f"{ui}/checks?namespace={NS}"
    found = {(r.get_attribute("data-check"), r.get_attribute("data-object")):
             " ".join(r.text.split()) for r in browser.find_elements(By.CSS_SELECTOR, "tr.result")}
    assert set(found) == {("MT2001", f"Deployment {NS}/priv"),
                          ("MT2001", f"Deployment {NS}/legacy-agent"),
                          ("MT1003", f"Deployment {NS}/nolimits"),
                          ("MT1003", f"Deployment {NS}/unlimited")}
    assert "denied" in found[("MT2001", f"Deployment {NS}/priv")]
    assert "warned" in found[("MT1003", f"Deployment {NS}/nolimits")]
    exempted = found[("MT2001", f"Deployment {NS}/legacy-agent")]
    assert (f"exempted by MagTapeException {NS}/legacy-agents, owner e2e@example.com, "
            "ticket OPS-1234, until") in exempted and "(10d 0h)" in exempted, exempted
    assert browser.find_element(By.LINK_TEXT, "MT2001 documentation").get_attribute(
        "href").endswith("/policies/privileged-pod/README.md")
    assert serious_violations(browser) == []
    shot(browser, cluster, "checks")

    # Blocked and warned admissions: who, what, when, which checks.
    eventually_shows(browser, f"{ui}/admissions?namespace={NS}",
                     f'tr.admission[data-object="Deployment {NS}/blocked"]', "the denial")
    text = row(browser, f'tr.admission[data-object="Deployment {NS}/blocked"]')
    assert " denied Deployment e2e-ui/blocked admin MT2001" in text, text
    eventually_shows(browser, f"{ui}/admissions?namespace={NS}",
                     f'tr.admission[data-object="Deployment {NS}/unlimited"]', "the warning")
    text = row(browser, f'tr.admission[data-object="Deployment {NS}/unlimited"]')
    assert " warned Deployment e2e-ui/unlimited admin MT1003" in text, text
    assert serious_violations(browser) == []
    browser.get(f"{ui}/admissions")
    shot(browser, cluster, "admissions")
    navigate(browser, browser.find_element(
        By.CSS_SELECTOR, f'tr.admission[data-object="Deployment {NS}/blocked"] td a').click)
    assert browser.current_url == f"{ui}/checks?namespace={NS}"

    # Exceptions: soonest expiry first, with owner, ticket and time left.
    browser.get(f"{ui}/exceptions?namespace={NS}")
    text = row(browser, f'tr.exception[data-exception="{NS}/legacy-agents"]')
    assert "MT2001 e2e@example.com OPS-1234" in text and "(10d 0h left)" in text, text
    assert serious_violations(browser) == []
    browser.get(f"{ui}/exceptions")
    shot(browser, cluster, "exceptions")
    navigate(browser, browser.find_element(By.LINK_TEXT, NS).click)
    assert browser.current_url == f"{ui}/checks?namespace={NS}"
    # The component's RBAC let every watch list and watch: no 403 was ever logged.
    # (A restarted API server refuses everyone for a moment: checked before that.)
    assert "403" not in ui_log(cluster), ui_log(cluster)[-3000:]


def test_the_page_says_stale_while_the_api_server_is_away_and_recovers(
        ui: str, browser: WebDriver, cluster: Cluster, magtape: MagTape) -> None:
    url = f"{ui}/namespaces?namespace={NS}"
    eventually_shows(browser, url, f'tr.ns[data-namespace="{NS}"]', "the namespace's row")
    assert not browser.find_elements(By.ID, "stale")
    with cluster.apiserver_stopped():
        eventually_shows(browser, url, "#stale", "the stale banner", timeout=60)
        assert "Data is stale." in browser.find_element(By.ID, "stale").text
        # The last known state is still there, and every view still answers.
        assert browser.find_elements(By.CSS_SELECTOR, f'tr.ns[data-namespace="{NS}"]')
        for view in VIEWS:
            browser.get(f"{ui}/{view}")
            assert browser.find_element(By.ID, "stale").is_displayed(), view
        browser.get(f"{ui}/namespaces")
        shot(browser, cluster, "stale")
    # Back: the watches reconnect and the banner goes, without a restart of the page.
    def fresh() -> bool:
        browser.get(url)
        return not browser.find_elements(By.ID, "stale")
    wait_for(fresh, 90, "the stale banner to go after the API server is back", interval=0.5)
    assert browser.find_elements(By.CSS_SELECTOR, f'tr.ns[data-namespace="{NS}"]')
    # The tests after this one find MagTape enforcing again.
    wait_for(lambda: magtape.http_get(magtape.metrics_port, "/readyz")[0] == 200, 60,
             "magtape serve /readyz after the API server's restart")
    wait_enforcing(cluster)
