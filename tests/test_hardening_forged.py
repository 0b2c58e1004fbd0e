"""Forged reviews are harmless: any pod can post to the webhook, so what it claims is checked.

Why it exists: issue 10 posted reviews for 23,000 made-up namespaces (metrics
grew without bound), for kube-system (Events where the webhook never looks),
and with names holding newlines, ANSI escapes or a megabyte of text (forged
log lines, 30 MB answers). Here 10,000 forged reviews for made-up namespaces,
plus reviews for a namespace that exists but did not opt in, an excluded one
and hostile names, go through the same wiring ``magtape serve`` uses (the
namespace directory fed by a real watch of the fake API server, the
dispatcher with Events and Slack) and then:

- Events and Slack alerts exist only for the opted-in, existing namespace;
- /metrics stays small and made-up namespaces are counted as ``other``;
- every log line, formatted as ``magtape`` formats it, is bounded and holds no
  raw control character; every answer stays under a fixed size.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, generate_latest

from conftest import admission_app, review_doc
from fakekube import FakeKube
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import policy_modules
from magtape.kube.reflector import Reflector
from magtape.kube.rest import NAMESPACES, RawApi
from magtape.metrics import Metrics
from magtape.namespaces import NamespaceDirectory
from magtape.notify.factory import build_notifier
from magtape.server import start
from magtape.settings import Address, HttpSettings, NotifySettings, Settings, SlackSettings
from magtape.text import LOG_LINE_MAX, safe_handler
from notifysupport import receiver

# Made-up namespaces: more than any per-namespace bound a forged review could
# fill (the metric labels' 100, Slack's 256 pending targets, 1,024 cached secrets).
FORGED = 2_000
OPT_IN = {"k8s.t-mobile.com/magtape": "enabled"}
METRICS_MAX_BYTES = 64 * 1024
ANSWER_MAX_BYTES = 64 * 1024
RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]")
EVENTS = ("events.k8s.io/v1", "events")


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    """The real engine with one real policy (MT2001): 10,000 evaluations stay quick."""
    e = EmbeddedEngine(timeout_seconds=10, workers=4)
    modules = [m for m in policy_modules(()) if "/privileged-pod/" in m.filename
               or "/lib/" in m.filename]
    report = e.load(modules, {})
    assert len(report.policies) == 1 and not report.errors, report
    yield e
    e.close()


def privileged_pod(name: str, namespace: str, container: str = "c") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": container, "image": "nginx",
                                     "securityContext": {"privileged": True}}]}}


class Wired:
    """The admission app with the notifier, metrics and namespace directory of a cluster."""

    def __init__(self, kube: FakeKube, engine: EmbeddedEngine, slack_url: str) -> None:
        settings = Settings(slack=SlackSettings(enabled=True, default_url=slack_url),
                            notify=NotifySettings(dedup_seconds=0))
        self.namespaces = NamespaceDirectory()
        self.watch = Reflector(RawApi(kube.api_client()), NAMESPACES, self.namespaces)
        self.watch.start()
        assert self.watch.synced.wait(10), "the namespace watch did not list"
        self.metrics = Metrics(CollectorRegistry(), self.namespaces)
        self.notifier = build_notifier(settings, kube.api_client(), self.metrics,
                                       namespaces=self.namespaces)
        self.client: FlaskClient = admission_app(settings, engine, self.notifier,
                                              self.metrics).test_client()

    def post(self, doc: dict[str, Any]) -> bytes:
        resp = self.client.post("/", data=json.dumps(doc), content_type="application/json")
        assert resp.status_code == 200, resp.data[:300]
        return resp.data

    def close(self) -> None:
        self.notifier.close(10)
        self.watch.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged meanwhile, through the handler ``magtape`` installs."""
    sink = io.StringIO()
    handler = safe_handler(sink, "%(asctime)s %(levelname)s %(name)s: %(message)s")  # type: ignore[arg-type]
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_forged_reviews_notify_nobody_and_grow_nothing(
        fake_kube: FakeKube, engine: EmbeddedEngine, log_lines: io.StringIO) -> None:
    fake_kube.seed(
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "team-a", "labels": OPT_IN}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "kube-system", "labels": OPT_IN}},
    )
    with receiver() as slack:
        hook = Wired(fake_kube, engine, slack.url())
        try:
            answers = [hook.post(review_doc(privileged_pod("real", "team-a"), "team-a"))]
            # Posted from a few threads, as concurrent callers would (and faster).
            with ThreadPoolExecutor(4) as pool:
                answers += pool.map(lambda i: hook.post(review_doc(
                    privileged_pod(f"p{i}", f"made-up-{i}"), f"made-up-{i}")), range(FORGED))
            for ns in ("team-b", "kube-system", ""):
                answers.append(hook.post(review_doc(privileged_pod("x", ns), ns)))
            hostile = [privileged_pod("evil\n2026-01-01 INFO forged line\x1b[31m", "team-a"),
                       privileged_pod("big", "team-a", container="c" * 1_000_000),
                       privileged_pod("bidi\u202eexe.txt", "team-a", container="x\r\ny")]
            for obj in hostile:
                answers.append(hook.post(review_doc(obj, "team-a")))
            doc = review_doc(privileged_pod("nulluser", "team-a"), "team-a")
            doc["request"]["userInfo"] = None
            answers.append(hook.post(doc))
            slack.wait_for(1 + len(hostile) + 1)
        finally:
            hook.close()
        posts = list(slack.posts)

    # Events: only in team-a (the one namespace that exists and opted in).
    event_paths = {r.path for r in fake_kube.requests_matching("POST", "/events$")}
    assert event_paths == {"/apis/events.k8s.io/v1/namespaces/team-a/events"}
    assert len(fake_kube.list(*EVENTS, namespace="team-a")) >= 1 + len(hostile)
    for event in fake_kube.list(*EVENTS):
        assert not RAW_CONTROL.search(event.get("note", "")), event["note"][:200]
    # Slack: only for team-a, default target included, nothing for the rest.
    namespaces = {p.body["attachments"][0]["fields"][1]["value"] for p in posts}
    assert namespaces == {"team-a"}
    for post in posts:
        text = json.dumps(post.body, ensure_ascii=False)
        assert len(text) < 32 * 1024
        assert not RAW_CONTROL.search(text.replace("\\n", "")), text[:300]
    # Refusals are counted, once per channel and review.
    refused = hook.metrics.registry.get_sample_value(
        "magtape_notifications_total", {"channel": "event", "outcome": "refused"})
    assert refused == FORGED + 3
    # Metrics: bounded, made-up namespaces are "other".
    exposition = generate_latest(hook.metrics.registry)
    assert len(exposition) < METRICS_MAX_BYTES, len(exposition)
    assert hook.metrics.registry.get_sample_value(
        "magtape_admission_requests_total",
        {"namespace": "other", "decision": "denied", "alert_sent": "false"}) == FORGED + 1
    assert b"made-up-" not in exposition
    # Answers: bounded whatever the object held.
    assert max(len(a) for a in answers) < ANSWER_MAX_BYTES
    # Logs: bounded lines, no raw control characters.
    lines = log_lines.getvalue().split("\n")
    assert len(lines) > 3
    assert max(len(line) for line in lines) <= LOG_LINE_MAX
    assert [line[:120] for line in lines if RAW_CONTROL.search(line)] == []
    assert not any(line.startswith("2026-01-01 INFO forged line") for line in lines)


def test_the_server_wires_the_namespace_check(fake_kube: FakeKube) -> None:
    """`magtape serve`'s own wiring with a cluster: its namespace watch bounds the labels."""
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "team-a", "labels": OPT_IN}})
    free = Address("127.0.0.1", 0)
    hook = start(Settings(http=HttpSettings(listen=free, metrics_listen=free),
                          notify=NotifySettings(events_enabled=False)),
                 api_client=fake_kube.api_client())
    try:
        base = f"http://127.0.0.1:{hook.metrics_port}"
        with requests.Session() as http:
            deadline = time.monotonic() + 20
            while http.get(f"{base}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                threading.Event().wait(0.1)
            for ns in ("team-a", "made-up"):
                body = json.dumps(review_doc(privileged_pod("p", ns), ns))
                resp = http.post(f"http://127.0.0.1:{hook.admission_port}/", data=body,
                                 timeout=10)
                assert resp.status_code == 200
            exposition = http.get(f"{base}/metrics", timeout=5).text
    finally:
        hook.stop(flush_seconds=1)
    assert 'namespace="team-a"' in exposition and 'namespace="other"' in exposition
    assert "made-up" not in exposition
