"""The compliance page (``magtape ui``) on a model fed as its watches feed it: every view, the
filters, sorting, pagination, the stale banner, the Events history, and that it is read-only.

The model's parts are the reflector handlers themselves, fed the documents the
cluster holds (tests/uisupport.py); API failures are injected with the fake
API server. The page against the real API server, in Chromium, is
tests/e2e/test_ui_e2e.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from fakekube import FakeKube, Resource
from magtape.audit.report import REPORT_NAME as AUDIT_REPORT_NAME
from magtape.cli import main
from magtape.policy import DenyLevel
from magtape.remediation import default_catalogue
from magtape.settings import Settings
from magtape.ui.command import ObservedApi, UiOptions, in_background, informers
from magtape.ui.history import AdmissionHistory
from magtape.ui.model import PER_PAGE, REPORT_NAME, Model
from magtape.ui.web import create_app
from test_html_report import Page
from uisupport import NOW, Obj, event, filled_model, namespace, report, result
from waiting import eventually


@pytest.fixture
def model() -> Model:
    return filled_model()


@pytest.fixture
def client(model: Model) -> FlaskClient:
    return create_app(model).test_client()


def page(client: FlaskClient, path: str) -> Page:
    r = client.get(path)
    assert r.status_code == 200, r.data
    return Page(r.get_data(as_text=True))


def rows(p: Page, cls: str) -> list[str]:
    return [text for attrs, text in p.rows if attrs.get("class") == cls]


def test_namespaces_count_by_severity_with_deny_level_and_pod_security(
        client: FlaskClient) -> None:
    found = rows(page(client, "/namespaces"), "ns")
    assert found == [
        "team-a 1 (high 1) 1 (low 1) 1 (high 1) LOW restricted",  # most failing first
        "team-b 0 1 (medium 1) 0 LOW —",
        "team-c 0 0 0 LOW —"]
    by_name = rows(page(client, "/namespaces?sort=name&order=desc"), "ns")
    assert [r.split()[0] for r in by_name] == ["team-c", "team-b", "team-a"]
    warned = rows(page(client, "/namespaces?sort=warned"), "ns")
    assert [r.split()[0] for r in warned] == ["team-a", "team-b", "team-c"]
    # A filter narrows what is counted.
    medium = rows(page(client, "/namespaces?severity=medium&sort=warned"), "ns")
    assert medium[0] == "team-b 0 1 (medium 1) 0 LOW —"
    assert medium[1] == "team-a 0 0 0 LOW restricted"


def test_a_namespace_rule_of_the_enforcement_configmap_sets_its_deny_level(
        model: Model, client: FlaskClient) -> None:
    model.config_watch.replace([{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "magtape-enforcement", "namespace": "magtape-system"},
        "data": {"enforcement.yaml": "namespaces:\n- selector: {matchLabels: {kubernetes.io/"
                                     "metadata.name: team-b}}\n  denyLevel: HIGH\n"}}])
    found = rows(page(client, "/namespaces?sort=name&order=asc"), "ns")
    assert found[1].endswith("HIGH —") and found[0].endswith("LOW restricted")


def test_namespaces_the_webhook_does_not_review_show_no_deny_level(model: Model,
                                                                   client: FlaskClient) -> None:
    quiet = namespace("quiet")
    del quiet["metadata"]["labels"]["k8s.t-mobile.com/magtape"]
    model.namespaces.apply("ADDED", quiet)
    model.namespaces.apply("ADDED", namespace("kube-public"))  # labelled, yet left out
    found = rows(page(client, "/namespaces?sort=name"), "ns")
    assert found[0] == "kube-public (no report) 0 0 0 not enforced —"
    assert found[1] == "quiet (no report) 0 0 0 not enforced —"
    assert found[2].startswith("team-a ") and " LOW restricted" in found[2]


def test_the_check_filter_narrows_the_summary_and_odd_check_ids_get_valid_ids(
        model: Model, client: FlaskClient) -> None:
    (only,) = rows(page(client, "/checks?check=MT1003"), "check-summary")
    assert "MT1003" in only
    odd = "MY CHECK\t" + "X" * 100  # a custom policy's errcode may be anything
    doc = report("team-c", {"api": [result("MT2001", "fail")]})
    doc["results"][0]["properties"]["checkId"] = odd
    model.reports.apply("MODIFIED", doc)
    html = client.get("/checks?namespace=team-c").get_data(as_text=True)
    ids = re.findall(r'id="([^"]*)"', html)
    assert ids and not any(re.search(r"\s", i) for i in ids)
    assert 'id="h-MY_CHECK_' + "X" * 100 + '"' in html
    assert len(rows(page(client, "/checks?check=" + odd.replace("\t", "%09")), "result")) == 1


def test_namespace_links_go_to_its_results(client: FlaskClient) -> None:
    html = client.get("/namespaces").get_data(as_text=True)
    assert '<a href="/checks?namespace=team-a">team-a</a>' in html
    p = page(client, "/checks?namespace=team-a")
    assert {a["data-object"] for a, _ in p.rows if a.get("class") == "result"} == {
        "Deployment team-a/priv", "Deployment team-a/legacy-app"}


def test_checks_show_remedies_and_the_exception_beside_the_result_it_covers(
        client: FlaskClient) -> None:
    p = page(client, "/checks")
    summary = rows(p, "check-summary")
    assert summary[0].startswith("MT2001") and summary[0].endswith("high 1 0 1")
    results = {(a["data-check"], a["data-object"]): t for a, t in p.rows
               if a.get("class") == "result"}
    exempted = results[("MT2001", "Deployment team-a/legacy-app")]
    assert ("exempted by MagTapeException team-a/legacy-priv, owner team-a, ticket OPS-1, "
            "until 2026-12-08 12:00:00 UTC (3d 0h)") in exempted
    assert "denied" in results[("MT2001", "Deployment team-a/priv")]
    html = client.get("/checks").get_data(as_text=True)
    assert re.search(r"How to fix: [^<]+<a href=\"https://[^\"]+\">MT2001 documentation</a>", html)
    only = page(client, "/checks?check=MT1003")
    assert [a["data-object"] for a, _ in only.rows if a.get("class") == "result"] == [
        "Deployment team-b/web"]


def test_admissions_list_who_what_when_and_which_checks(client: FlaskClient) -> None:
    found = rows(page(client, "/admissions"), "admission")
    assert found[0].startswith("2026-12-05 11:55:00 UTC denied Deployment team-a/priv "
                               "jane@example.com MT2001, MT1001")
    assert found[1].startswith("2026-12-05 11:30:00 UTC warned Deployment team-b/web ci-bot "
                               "MT1003")
    assert len(rows(page(client, "/admissions?severity=high"), "admission")) == 1
    assert len(rows(page(client, "/admissions?check=MT1003"), "admission")) == 1
    assert len(rows(page(client, "/admissions?namespace=team-c"), "admission")) == 0


def test_exceptions_soonest_expiry_first_and_expired_marked(client: FlaskClient) -> None:
    p = page(client, "/exceptions")
    found = [(a["data-exception"], a.get("data-expired"), t) for a, t in p.rows
             if a.get("class") == "exception"]
    assert [(ref, expired) for ref, expired, _ in found] == [
        ("team-b/old-one", "true"), ("team-a/legacy-priv", None)]
    assert "expired expired 1d 0h ago" in found[0][2]
    assert "team-a OPS-1 2026-12-08 12:00:00 UTC (3d 0h left)" in found[1][2]


def test_pagination_pages_every_view(model: Model, client: FlaskClient) -> None:
    model.namespaces.replace([namespace(f"ns-{i:03}") for i in range(PER_PAGE + 7)])
    model.reports.replace([report(f"ns-{i:03}", {"app": [result("MT1001", "warn")]})
                           for i in range(PER_PAGE + 7)])
    first = page(client, "/namespaces?sort=name&order=asc")
    assert len(rows(first, "ns")) == PER_PAGE
    html = client.get("/namespaces?sort=name&order=asc").get_data(as_text=True)
    assert 'href="/namespaces?sort=name&amp;order=asc&amp;page=2" rel="next"' in html
    second = rows(page(client, "/namespaces?sort=name&order=asc&page=2"), "ns")
    assert [r.split()[0] for r in second] == [f"ns-{i:03}" for i in range(PER_PAGE, PER_PAGE + 7)]
    last = rows(page(client, "/checks?page=2"), "result")
    assert len(rows(page(client, "/checks"), "result")) == PER_PAGE and len(last) == 7
    # Out of range and nonsense both land on a real page.
    assert len(rows(page(client, "/checks?page=999"), "result")) == 7
    assert len(rows(page(client, "/checks?page=x&severity=bogus&sort=%3Cb%3E"), "result")) == 50


def test_stale_watches_show_a_banner_and_the_last_known_state(model: Model,
                                                             client: FlaskClient) -> None:
    assert b'id="stale"' not in client.get("/namespaces").data
    model.health.failed("v1/namespaces")
    p = client.get("/namespaces").get_data(as_text=True)
    assert "Data is stale." in p and "Not current: v1/namespaces." in p
    assert "team-a" in p  # still the last known state
    model.health.succeeded("v1/namespaces")
    assert b'id="stale"' not in client.get("/namespaces").data


def test_readiness_waits_for_the_first_list_of_every_watch(client: FlaskClient,
                                                           model: Model) -> None:
    assert client.get("/readyz").status_code == 200
    model.health.expect("events.k8s.io/v1/events")
    r = client.get("/readyz")
    assert r.status_code == 503 and b"events.k8s.io/v1/events" in r.data
    assert client.get("/healthz").status_code == 200


def test_read_only_hardened_and_escaped(model: Model, client: FlaskClient) -> None:
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client, method)("/exceptions").status_code == 405
    r = client.get("/checks?namespace=%3Cscript%3Ealert(1)%3C/script%3E")
    assert r.status_code == 200 and b"<script" not in r.data
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in r.data
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    assert client.get("/").headers["Location"].endswith("/namespaces")
    assert client.get("/nothing").status_code == 404


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8080", 200), ("localhost:8080", 200), ("[::1]:8080", 200), ("LOCALHOST", 200),
    ("ui.example.com", 200), ("UI.example.com:443", 200),  # --allowed-host
    # A name an attacker re-pointed to 127.0.0.1 (DNS rebinding), and odd ones.
    ("attacker.example:8080", 421), ("127.0.0.1.nip.io:8080", 421), ("", 421),
    ("[::1", 421), ("localhost.:8080", 421),
])
def test_only_the_pages_own_host_names_are_answered(model: Model, host: str,
                                                    status: int) -> None:
    client = create_app(model, allowed_hosts=("ui.example.com",)).test_client()
    r = client.get("/namespaces", headers={"Host": host})
    assert r.status_code == status, (host, r.data[:200])
    if status == 421:
        assert b"--allowed-host" in r.data and b"team-a" not in r.data
        assert r.headers["Cache-Control"] == "no-store"


def test_a_report_counts_only_its_own_namespace_and_only_the_audits_report_counts(
        model: Model, client: FlaskClient) -> None:
    """Whoever may write a labelled PolicyReport must not plant findings in another
    namespace, nor hide the audit's report behind a copy."""
    planted = report("team-c", {"api": [result("MT2001", "fail")]})
    planted["results"][0]["resources"][0]["namespace"] = "kube-system"
    model.reports.apply("MODIFIED", planted)
    copy = {**report("team-a", {}), "metadata": {**report("team-a", {})["metadata"],
                                                 "name": "stray-copy"}}
    model.reports.apply("ADDED", copy)
    model.reports.apply("DELETED", copy)
    found = rows(page(client, "/namespaces?sort=name"), "ns")
    assert found[0].startswith("team-a 1 (high 1)")  # the audit's report, untouched
    assert found[2].startswith("team-c 0 0 0")
    assert rows(page(client, "/checks?namespace=kube-system"), "result") == []
    assert AUDIT_REPORT_NAME == REPORT_NAME


def test_report_links_are_https_and_follow_the_reports(model: Model) -> None:
    """Links of checks the catalogue does not know come from the reports: https only,
    and the current reports', not the first ever seen."""
    def with_readme(link: str) -> Obj:
        doc = report("team-c", {"api": [result("MT2001", "fail")]})
        doc["results"][0]["properties"].update(checkId="CUSTOM1", readme=link)
        return doc

    model.reports.apply("MODIFIED", with_readme("javascript:alert(document.domain)"))
    assert model.reports.url("CUSTOM1") == ""
    model.reports.apply("MODIFIED", with_readme("https://evil.example/phish"))
    model.reports.apply("MODIFIED", with_readme("https://docs.example/custom1"))
    assert model.reports.url("CUSTOM1") == "https://docs.example/custom1"


def test_the_history_keeps_expired_events_and_is_bounded() -> None:
    history = AdmissionHistory(capacity=3, clock=lambda: NOW)
    history.replace([event("a", f"app-{i}", True, ["MT2001"], NOW - timedelta(minutes=i))
                     for i in range(2)])
    assert history.since == NOW
    gone = event("a", "app-0", True, ["MT2001"], NOW)
    history.apply("DELETED", gone)  # the API server's TTL deleted it: kept here
    assert [a.name for a in history.newest_first()] == ["app-0", "app-1"]
    for i in range(2, 5):
        history.apply("ADDED", event("a", f"app-{i}", False, ["MT1001"],
                                     NOW + timedelta(minutes=i)))
    assert [a.name for a in history.newest_first()] == ["app-4", "app-3", "app-2"]
    assert history.dropped == 2


def test_the_history_keeps_the_newest_events_whatever_order_they_are_listed_in() -> None:
    """The API server lists Events by name, not by time: the newest must stay."""
    history = AdmissionHistory(capacity=3, clock=lambda: NOW)
    minutes = [59, 1, 30, 20, 45]  # listed in name order: app-0 .. app-4
    history.replace([event("a", f"app-{i}", True, ["MT2001"], NOW + timedelta(minutes=m))
                     for i, m in enumerate(minutes)])
    assert [a.name for a in history.newest_first()] == ["app-0", "app-4", "app-2"]
    history.apply("ADDED", event("a", "late-old", True, ["MT2001"], NOW))  # older than all
    assert [a.name for a in history.newest_first()] == ["app-0", "app-4", "app-2"]
    assert history.dropped == 3


def test_a_report_change_is_shown_once_the_index_caught_up() -> None:
    """As ``magtape ui`` runs it: the index is rebuilt on a background thread."""
    model = filled_model(spawn=in_background)
    client = create_app(model).test_client()
    assert len(rows(page(client, "/checks?namespace=team-c"), "result")) == 0
    model.reports.apply("MODIFIED", report("team-c", {"api": [result("MT2001", "fail")]}))
    # Views keep answering meanwhile (from the previous index); the new result appears.
    eventually(lambda: len(rows(page(client, "/checks?namespace=team-c"), "result")) == 1, 10,
               "the changed report on the page")
    assert model.reports.settled()
    assert rows(page(client, "/namespaces?namespace=team-c"), "ns")[0].startswith(
        "team-c 1 (high 1)")


def test_the_command_line_refuses_a_bad_address_and_says_what_to_do_without_a_cluster(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ui", "--listen", "nowhere"])
    assert exited.value.code == 2 and "expected HOST:PORT" in capsys.readouterr().err
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["ui"]) == 2
    assert "no cluster found" in capsys.readouterr().err


def test_before_the_first_list_the_page_says_its_data_is_incomplete(
        model: Model, client: FlaskClient) -> None:
    model.health.expect("events.k8s.io/v1/events")
    model.health.failed("events.k8s.io/v1/events")
    html = client.get("/admissions").get_data(as_text=True)
    assert "Data is incomplete." in html and "Data is stale." not in html
    assert "Waiting for the first list of events.k8s.io/v1/events" in html


def test_the_watches_mark_the_page_stale_on_api_failures_and_recover(
        fake_kube: FakeKube) -> None:
    """Fault injection (the fake API server): 500s on every call while the watches are
    open, then healthy again; the model keeps its state throughout."""
    fake_kube.register(Resource("wgpolicyk8s.io/v1alpha2", "policyreports", "PolicyReport",
                                True))
    fake_kube.register(Resource("magtape.k8s.t-mobile.com/v1alpha1", "magtapeexceptions",
                                "MagTapeException", True))
    fake_kube.seed(namespace("team-a"), report("team-a", {"priv": [result("MT2001", "fail")]}))
    model = Model(DenyLevel.LOW, default_catalogue())
    options = UiOptions(backoff_max_seconds=0.2)
    watches = informers(Settings(), ObservedApi(fake_kube.api_client(), model.health), model,
                        options)
    watches.start()
    try:
        eventually(lambda: model.health.status() is None, 10, "every watch to sync")
        assert [r.name for r in model.reports.all_rows()] == ["priv"]
        fake_kube.fail(500)
        fake_kube.end_watches()
        stale = eventually(model.health.status, 10, "the page to know it is stale")
        assert stale.since is not None and not stale.never_synced
        assert [r.name for r in model.reports.all_rows()] == ["priv"]  # last known state
        fake_kube.clear_faults()
        eventually(lambda: model.health.status() is None, 10, "the watches to recover")
    finally:
        watches.stop()
