"""Kubernetes Events for policy failures, written through the real kubernetes client.

The admission app runs with the notifier the server builds; Events land in
the shared fake API server (tests/fakekube.py) and are read back both as
stored JSON and through the client's typed models.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import EventsV1Api
from prometheus_client import CollectorRegistry

from conftest import admission_app, review_doc
from fakekube import FakeKube
from magtape.engine.embedded import EmbeddedEngine
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.notify.dispatcher import Dispatcher
from magtape.notify.events import NOTE_MAX_BYTES, EventRecorder, generate_name
from magtape.notify.factory import build_notifier
from magtape.policy import DenyLevel
from magtape.settings import IdentitySettings, NotifySettings, Settings, SlackSettings
from magtape.text import cut_at_word
from notifysupport import deployment, label_policies, outcome

EVENTS = ("events.k8s.io/v1", "events")
HIGH = '[FAIL] HIGH - Found privileged Security Context for container "{}" (MT2001)'
LOW = '[FAIL] LOW - Liveness Probe missing for container "{}" (MT1001)'
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)$")


@pytest.fixture(scope="module")
def engine() -> Any:
    e = EmbeddedEngine(timeout_seconds=10, workers=2)
    assert not e.load(label_policies(), {}).errors
    yield e
    e.close()


def event_settings(**overrides: Any) -> Settings:
    return Settings(deny_level=DenyLevel.LOW, identity=IdentitySettings(pod="magtape-7d9c5-x2x7q"),
                    notify=NotifySettings(events_enabled=True),
                    slack=SlackSettings(enabled=False)).with_overrides(**overrides)


class Harness:
    def __init__(self, engine: EmbeddedEngine, kube: FakeKube, **overrides: Any) -> None:
        settings = event_settings(**overrides)
        self.metrics = Metrics(CollectorRegistry())
        self.notifier = build_notifier(settings, kube.api_client(), self.metrics)
        assert isinstance(self.notifier, Dispatcher)
        self.client = admission_app(settings, engine, self.notifier, self.metrics).test_client()

    def admit(self, obj: dict[str, Any], **request: Any) -> dict[str, Any]:
        resp = self.client.post("/", json=review_doc(obj, obj["metadata"].get("namespace", ""),
                                                     **request))
        assert resp.status_code == 200, resp.data
        return dict(resp.get_json()["response"])

    def events(self, outcome: str) -> float:
        return self.metrics.registry.get_sample_value(
            "magtape_notifications_total", {"channel": "event", "outcome": outcome}) or 0.0


def test_a_denial_records_a_warning_event_regarding_the_object(
        engine: EmbeddedEngine, fake_kube: FakeKube) -> None:
    h = Harness(engine, fake_kube)
    obj = deployment("web", "fail-high", "fail-low")
    obj["metadata"]["uid"] = "6b2f0c1e-0d7a-4b8e-9d52-2a1f3c4d5e6f"  # an UPDATE carries one
    assert h.admit(obj, operation="UPDATE",
                   userInfo={"username": "jane@example.com"})["allowed"] is False
    h.notifier.close(5)

    (event,) = fake_kube.list(*EVENTS, namespace="test1")
    assert event["regarding"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                  "namespace": "test1",
                                  "uid": "6b2f0c1e-0d7a-4b8e-9d52-2a1f3c4d5e6f"}
    assert event["reason"] == "MagTapePolicyFailure"
    assert event["type"] == "Warning"
    assert event["action"] == "Denied"
    # The original message first and intact, then the catalogue's remedies.
    message, remedies = event["note"].split(" | How to fix: ")
    assert message == f"{HIGH.format('web')}, {LOW.format('web')}"
    assert [line.split(":")[0] for line in remedies.split(" | ")] == ["MT2001", "MT1001"]
    assert "/policies/privileged-pod/README.md" in remedies
    assert event["reportingController"] == "magtape"
    assert event["reportingInstance"] == "magtape-7d9c5-x2x7q"
    assert event["metadata"]["labels"] == {"magtape-event": "policy-failure"}
    # Who asked: the compliance page's "Requested by" (magtape.ui.history).
    assert event["metadata"]["annotations"] == {
        "magtape.k8s.t-mobile.com/requested-by": "jane@example.com"}
    assert event["metadata"]["name"].startswith("web-")
    assert MICRO_TIME.match(event["eventTime"]), event["eventTime"]
    assert h.events("sent") == 1

    # Read back through the client's typed models, as kubectl would list them.
    listed = EventsV1Api(fake_kube.api_client()).list_namespaced_event(
        "test1", label_selector="magtape-event=policy-failure")
    assert [(e.reason, e.regarding.kind, e.event_time is not None) for e in listed.items] == \
        [("MagTapePolicyFailure", "Deployment", True)]


def test_failures_that_do_not_deny_are_recorded_as_allowed(
        engine: EmbeddedEngine, fake_kube: FakeKube) -> None:
    h = Harness(engine, fake_kube)
    assert h.admit(deployment("web", "fail-low"))["allowed"] is True
    assert h.admit(deployment("clean"))["allowed"] is True  # no failures: no Event
    h.notifier.close(5)
    (event,) = fake_kube.list(*EVENTS, namespace="test1")
    assert event["action"] == "Allowed" and event["note"].startswith(
        LOW.format("web") + " | How to fix: MT1001: ")
    assert "uid" not in event["regarding"]  # a CREATE has none yet


def test_dry_runs_record_nothing(engine: EmbeddedEngine, fake_kube: FakeKube) -> None:
    h = Harness(engine, fake_kube)
    h.admit(deployment("dry", "fail-high"), dryRun=True)
    h.notifier.close(5)
    assert fake_kube.list(*EVENTS) == []
    assert fake_kube.requests_matching("POST") == []


def test_a_pod_named_by_generate_name_gets_a_valid_event_name(
        engine: EmbeddedEngine, fake_kube: FakeKube) -> None:
    h = Harness(engine, fake_kube)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "web-5d4f-", "namespace": "test1",
                        "labels": {"fail-high": "true"}},
           "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
    h.admit(pod)
    h.notifier.close(5)
    (event,) = fake_kube.list(*EVENTS, namespace="test1")
    assert event["metadata"]["name"].startswith("web-5d4f-")
    assert event["regarding"]["kind"] == "Pod" and event["regarding"]["apiVersion"] == "v1"


def test_the_note_is_cut_to_the_api_limit(fake_kube: FakeKube) -> None:
    messages = tuple(f'[FAIL] LOW - Liveness Probe missing for container "c{i:02}-{"x" * 60}" '
                     f"(MT1001)" for i in range(20))  # about 2 kB
    metrics = Metrics(CollectorRegistry())
    EventRecorder(fake_kube.api_client(), "magtape-0", metrics).deliver(
        outcome("web", messages=messages))
    (event,) = fake_kube.list(*EVENTS, namespace="test1")
    note = event["note"]
    assert len(note.encode()) <= NOTE_MAX_BYTES
    # Cut between whole messages, never mid-word, saying how much was left out.
    shown, _, rest = note.rpartition(" (+")
    kept = shown.split(", ")
    assert kept == sorted(messages)[:len(kept)] and len(kept) >= 6
    assert rest == f"{20 - len(kept)} failures, 1 fix left out)", note


def test_a_message_too_long_alone_is_cut_after_a_word() -> None:
    words = " ".join(["privileged"] * 200)  # 2,199 bytes
    cut = cut_at_word(words, 1024)
    assert len(cut.encode()) <= 1024 and cut.endswith("privileged...")
    assert cut_at_word("short", 1024) == "short"


def test_truncation_never_splits_a_character() -> None:
    text = "é" * 600  # 1200 bytes, no space
    cut = cut_at_word(text, 1024)
    assert len(cut.encode()) <= 1024 and cut.endswith("...") and "\ufffd" not in cut


def test_generate_name_is_a_valid_prefix() -> None:
    assert generate_name("web-5d4f-", "Pod") == "web-5d4f-"
    assert generate_name("", "Deployment") == "deployment-"
    assert generate_name("A_b", "Pod") == "a-b-"
    assert len(generate_name("x" * 300, "Pod")) == 58


def test_api_errors_are_logged_and_counted_never_raised(
        engine: EmbeddedEngine, fake_kube: FakeKube,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_kube.fail(403, method="POST", path="/events$", message="events is forbidden")
    h = Harness(engine, fake_kube)
    assert h.admit(deployment("web", "fail-high"))["allowed"] is False  # answered as usual
    h.notifier.close(5)
    fake_kube.clear_faults()
    fake_kube.fail(500, method="POST", path="/events$")
    h2 = Harness(engine, fake_kube)
    h2.admit(deployment("web", "fail-high"))
    h2.notifier.close(5)
    assert fake_kube.list(*EVENTS) == []
    assert h.events("failed") == 1 and h2.events("failed") == 1
    lines = [r.getMessage() for r in caplog.records
             if "could not create the Event" in r.getMessage()]
    assert len(lines) == 2
    assert "HTTP 403" in lines[0] and "RBAC" in lines[0]
    assert "HTTP 500" in lines[1]


def test_without_a_cluster_events_are_off_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="magtape.notify.factory")
    notifier = build_notifier(event_settings(), None, Metrics(CollectorRegistry()))
    assert isinstance(notifier, NullNotifier)
    lines = [r.getMessage() for r in caplog.records if r.name == "magtape.notify.factory"]
    assert len(lines) == 1 and "Kubernetes Events are off" in lines[0]


def test_control_characters_in_a_note_are_escaped_never_raw() -> None:
    from magtape.notify.events import event_note

    note = event_note(outcome("web", messages=['[FAIL] HIGH - value "a\nb\\c" (MT3001)']))
    assert "\n" not in note and "\\x0a" in note


def test_a_custom_policy_s_remedy_reaches_the_event_note(tmp_path: Path) -> None:
    """Events (and Slack) use the same remedies as `magtape check` and the audit: the
    built-in ones and those of MAGTAPE_POLICY_DIRS."""
    from magtape.notify.events import event_note
    from magtape.remediation import remedies_for
    from magtape.settings import EngineSettings, Settings

    folder = tmp_path / "no-latest"
    folder.mkdir()
    (folder / "remediation.yaml").write_text("id: MT9100\nhint: Pin the image by tag.\n")
    failing = outcome("web", messages=("[FAIL] HIGH - image uses latest (MT9100)",))
    custom = remedies_for(Settings(engine=EngineSettings(policy_dirs=(str(tmp_path),))))
    assert "MT9100: Pin the image by tag." in event_note(failing, custom)
    assert "Pin the image" not in event_note(failing, remedies_for(Settings()))


def test_an_unreachable_api_server_is_a_counted_failure_not_an_exception() -> None:
    import socket

    from kubernetes.client import ApiClient, Configuration

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    config = Configuration(host=f"http://127.0.0.1:{port}")
    config.retries = False
    metrics = Metrics(CollectorRegistry())
    EventRecorder(ApiClient(config), "magtape-0", metrics, timeout_seconds=2).deliver(
        outcome("web"))
    assert metrics.registry.get_sample_value(
        "magtape_notifications_total", {"channel": "event", "outcome": "failed"}) == 1
