"""Slack delivery is isolated per target, refuses unexpected ports, and survives any review shape.

Why it exists: issue 10 found one shared Slack worker, so one tenant URL that
never answers (3 x 5 s timeouts plus back-off per alert) delayed every other
alert; any port on an allowed host was accepted; and ``userInfo: null``
raised in the worker and lost the alert. Here real HTTPS receivers stand in
for Slack (tests/notifysupport.py) and the fake API server holds the tenants'
Secrets.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import review_doc
from fakekube import FakeKube
from magtape.decision import Outcome, decide
from magtape.metrics import Metrics
from magtape.notify.dispatcher import Dispatcher
from magtape.notify.slack import RETRY_TOTAL, WORKERS, SlackSender, retry_policy
from magtape.notify.slack_targets import TenantWebhooks
from magtape.policy import DenyLevel, Evaluation, PolicyResult, Severity, Violation
from magtape.review import review_from_document
from magtape.settings import NotifySettings, Settings, SlackSettings
from notifysupport import outcome, receiver
from pki import TlsFiles, make_tls_files

PATH = "/services/T/B/TOKEN"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def seed(kube: FakeKube, namespace: str, url: str) -> None:
    kube.seed({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "magtape-slack", "namespace": namespace},
               "data": {"webhook-url": base64.b64encode(url.encode()).decode()}})


def sent(metrics: Metrics, outcome_label: str) -> float:
    return metrics.registry.get_sample_value(
        "magtape_notifications_total", {"channel": "slack", "outcome": outcome_label}) or 0.0


def tenant_alerts(fake_kube: FakeKube, tls: TlsFiles, ports: tuple[int, ...],
                  timeout: float = 5, **sender_options: Any) -> tuple[Metrics, Dispatcher]:
    """Tenant-routed Slack alerts to receivers on ``ports``, no de-duplication."""
    settings = Settings(slack=SlackSettings(enabled=True, timeout_seconds=timeout,
                                            allowed_hosts=("127.0.0.1",), allowed_ports=ports),
                        notify=NotifySettings(dedup_seconds=0))
    metrics = Metrics(CollectorRegistry())
    sender = SlackSender(settings, metrics, TenantWebhooks(fake_kube.api_client()),
                         verify=str(tls.ca), **sender_options)
    return metrics, Dispatcher(metrics, slack=sender, queue_size=100)


def test_a_black_holing_tenant_does_not_delay_other_targets(
        fake_kube: FakeKube, tls: TlsFiles) -> None:
    with receiver("hang", tls=tls) as stuck, receiver(tls=tls) as healthy:
        seed(fake_kube, "stuck", stuck.url(PATH))
        seed(fake_kube, "healthy", healthy.url(PATH))
        _, dispatcher = tenant_alerts(fake_kube, tls, (stuck.port, healthy.port))
        try:
            for i in range(10):  # the stuck tenant's alerts go first ...
                dispatcher.submit(outcome(f"stuck-{i}", namespace="stuck"))
            stuck.wait_for(1)
            started = time.monotonic()
            dispatcher.submit(outcome("fine", namespace="healthy"))  # ... then another's
            (post,) = healthy.wait_for(1)
            took = time.monotonic() - started
        finally:
            dispatcher.close(0.5)
    assert took < 2, f"a healthy tenant's alert waited {took:.1f}s behind a stuck one"
    assert post.path == PATH
    assert len(stuck.posts) == 1, "one post in flight per target, the rest wait their turn"


def test_a_full_target_queue_drops_and_counts(fake_kube: FakeKube, tls: TlsFiles) -> None:
    with receiver("hang", tls=tls) as stuck:
        seed(fake_kube, "stuck", stuck.url(PATH))
        metrics, dispatcher = tenant_alerts(fake_kube, tls, (stuck.port,), per_target=3)
        try:
            for i in range(10):
                dispatcher.submit(outcome(f"stuck-{i}", namespace="stuck"))
            stuck.wait_for(1)
            deadline = time.monotonic() + 10
            while sent(metrics, "dropped") < 6 and time.monotonic() < deadline:
                stuck.release.wait(0.05)
        finally:
            dispatcher.close(0.2)
    # 10 alerts: 1 in flight + 3 queued, 6 dropped; the 3 left queued at close too.
    assert sent(metrics, "dropped") >= 6


def test_a_tenant_url_on_another_port_is_refused(fake_kube: FakeKube, tls: TlsFiles) -> None:
    with receiver(tls=tls) as tenant:
        seed(fake_kube, "team", tenant.url(PATH))
        settings = Settings(slack=SlackSettings(enabled=True, allowed_hosts=("127.0.0.1",)))
        metrics = Metrics(CollectorRegistry())
        sender = SlackSender(settings, metrics, TenantWebhooks(fake_kube.api_client()),
                             verify=str(tls.ca))
        assert sender.targets("team") == []
        sender.close(1)
    assert sent(metrics, "refused") == 1


def odd(request: dict[str, Any]) -> Outcome:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"},
           "spec": {}}
    doc = review_doc(pod, "team")
    doc["request"].update(request)
    message = "[FAIL] HIGH - weird\x1b[2J (MT2001)"
    evaluation = Evaluation((PolicyResult("privileged-pod", (
        Violation(message, "privileged-pod", Severity.HIGH, "MT2001"),)),))
    return Outcome(review_from_document(doc), decide(evaluation, DenyLevel.LOW), DenyLevel.LOW,
                   evaluation)


@pytest.mark.parametrize("request_fields", [
    {"userInfo": None}, {"userInfo": {}}, {"userInfo": {"username": 7}},
    {"userInfo": {"username": "u\n" * 5000}}, {"name": None}, {"namespace": None},
    {"object": {"metadata": {"name": ["not", "a", "string"]}}},
], ids=["userInfo-null", "userInfo-empty", "username-number", "username-huge", "name-null",
        "namespace-null", "object-name-list"])
def test_any_review_shape_gets_its_alert(request_fields: dict[str, Any]) -> None:
    with receiver() as slack:
        settings = Settings(slack=SlackSettings(enabled=True, default_url=slack.url(PATH)))
        metrics = Metrics(CollectorRegistry())
        dispatcher = Dispatcher(metrics, slack=SlackSender(settings, metrics), queue_size=10,
                                dedup_seconds=0)
        try:
            assert dispatcher.submit(odd(request_fields)) is True
            (post,) = slack.wait_for(1)
        finally:
            dispatcher.close(2)
    assert sent(metrics, "sent") == 1
    text = str(post.body)
    assert "\x1b" not in text and len(text) < 16 * 1024


def test_an_unreachable_target_is_skipped_for_a_while(fake_kube: FakeKube, tls: TlsFiles) -> None:
    """After a timeout, that target's next alerts fail at once instead of each waiting."""
    with receiver("hang", tls=tls) as stuck:
        seed(fake_kube, "stuck", stuck.url(PATH))
        metrics, dispatcher = tenant_alerts(fake_kube, tls, (stuck.port,), timeout=0.5)
        try:
            started = time.monotonic()
            for i in range(10):
                dispatcher.submit(outcome(f"stuck-{i}", namespace="stuck"))
            while sent(metrics, "failed") < 10 and time.monotonic() - started < 20:
                stuck.release.wait(0.05)
            took = time.monotonic() - started
        finally:
            dispatcher.close(1)
    assert sent(metrics, "failed") == 10
    assert len(stuck.posts) == 1, "only the first alert waited for the timeout"
    assert took < 4, f"10 alerts to a dead target took {took:.1f}s"


def test_tenants_holding_every_worker_do_not_delay_the_default_webhook(
        fake_kube: FakeKube, tls: TlsFiles) -> None:
    """The administrators' webhook has a worker of its own: as many black-holing
    tenants as there are workers cannot keep its alerts waiting."""
    with receiver("hang", tls=tls) as stuck, receiver(tls=tls) as admins:
        tenants = [f"stuck-{i}" for i in range(WORKERS)]
        for namespace in tenants:
            seed(fake_kube, namespace, stuck.url(PATH))
        settings = Settings(slack=SlackSettings(enabled=True, default_url=admins.url(PATH),
                                                allowed_hosts=("127.0.0.1",),
                                                allowed_ports=(stuck.port,)),
                            notify=NotifySettings(dedup_seconds=0))
        metrics = Metrics(CollectorRegistry())
        dispatcher = Dispatcher(metrics, slack=SlackSender(
            settings, metrics, TenantWebhooks(fake_kube.api_client()), verify=str(tls.ca)))
        try:
            for namespace in tenants:  # each tenant's alert also goes to the admins
                dispatcher.submit(outcome("web", namespace=namespace))
            stuck.wait_for(WORKERS - 1)  # every tenant worker is held
            admins.wait_for(WORKERS)
            started = time.monotonic()
            dispatcher.submit(outcome("other", namespace="no-secret"))
            admins.wait_for(WORKERS + 1)
            took = time.monotonic() - started
        finally:
            dispatcher.close(0.2)
    assert took < 2, f"the default webhook's alert waited {took:.1f}s behind tenants"


def test_a_target_still_refusing_after_the_retries_is_skipped_for_a_while(
        fake_kube: FakeKube, tls: TlsFiles) -> None:
    """A tenant webhook answering 5xx (or 429) to every retry costs one alert's
    retries a minute, not every alert's: the others fail at once."""
    with receiver("error", tls=tls) as refusing:
        seed(fake_kube, "refusing", refusing.url(PATH))
        metrics, dispatcher = tenant_alerts(fake_kube, tls, (refusing.port,),
                                            retry=retry_policy(0.01))
        try:
            for i in range(10):
                dispatcher.submit(outcome(f"web-{i}", namespace="refusing"))
            deadline = time.monotonic() + 20
            while sent(metrics, "failed") < 10 and time.monotonic() < deadline:
                refusing.release.wait(0.05)
        finally:
            dispatcher.close(1)
    assert sent(metrics, "failed") == 10
    assert len(refusing.posts) == 1 + RETRY_TOTAL, "one alert's post and retries, no more"
