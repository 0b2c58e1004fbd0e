"""The notification dispatcher: which channel gets what, bounded queues, shutdown, de-dup.

The sinks here are small real implementations of the Sink protocol that
record what they are given (and can be held on a gate); the dispatcher, its
threads and its metrics are the real ones.
"""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from magtape.admission import Outcome
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.notify.dispatcher import NAMESPACE_BURST, Dispatcher, NamespaceBudget, RecentAlerts
from magtape.notify.factory import build_notifier
from magtape.settings import NotifySettings, Settings, SlackSettings
from notifysupport import DENY, WARN, outcome


class RecordingSink:
    """Records delivered outcomes; with a gate, each delivery waits for the gate."""

    def __init__(self, channel: str, gate: threading.Event | None = None,
                 fail_first: bool = False) -> None:
        self.channel = channel
        self.gate = gate
        self.fail_first = fail_first
        self.delivered: list[Outcome] = []
        self.started = threading.Event()
        self.closed = False
        self._cond = threading.Condition()

    def deliver(self, outcome: Outcome) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("boom")
        with self._cond:
            self.delivered.append(outcome)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.delivered) >= count, timeout), \
                f"{self.channel}: {len(self.delivered)} of {count} deliveries"

    def names(self) -> list[str]:
        return [o.review.name for o in self.delivered]

    def close(self, timeout: float) -> None:
        self.closed = True


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def count(metrics: Metrics, channel: str, outcome_: str) -> float:
    value = metrics.registry.get_sample_value(
        "magtape_notifications_total", {"channel": channel, "outcome": outcome_})
    return value or 0.0


def test_events_for_every_failure_slack_only_for_denials(metrics: Metrics) -> None:
    events, slack = RecordingSink("event"), RecordingSink("slack")
    d = Dispatcher(metrics, events=events, slack=slack)
    assert d.submit(outcome("denied")) is True
    assert d.submit(outcome("allowed", messages=(WARN,))) is False
    d.close(5)
    assert events.names() == ["denied", "allowed"]
    assert slack.names() == ["denied"]
    assert events.closed and slack.closed


def test_passive_mode_alerts_on_failures_without_denial(metrics: Metrics) -> None:
    slack = RecordingSink("slack")
    d = Dispatcher(metrics, slack=slack, slack_passive=True)
    assert d.submit(outcome("allowed", messages=(WARN,))) is True
    d.close(5)
    assert slack.names() == ["allowed"]


def test_no_failures_and_dry_runs_notify_nobody(metrics: Metrics) -> None:
    events, slack = RecordingSink("event"), RecordingSink("slack")
    d = Dispatcher(metrics, events=events, slack=slack)
    assert d.submit(outcome("clean", messages=())) is False
    assert d.submit(outcome("dry", dry_run=True)) is False
    d.close(5)
    assert events.delivered == [] and slack.delivered == []


def test_full_queue_drops_the_newest_and_counts_it(metrics: Metrics) -> None:
    gate = threading.Event()
    slack = RecordingSink("slack", gate)
    d = Dispatcher(metrics, slack=slack, queue_size=2)
    try:
        assert d.submit(outcome("a"))
        assert slack.started.wait(5)  # the worker holds "a"; the queue is empty again
        assert d.submit(outcome("b"))
        assert d.submit(outcome("c"))
        assert d.submit(outcome("d")) is False
        assert d.submit(outcome("e")) is False
        assert count(metrics, "slack", "dropped") == 2
    finally:
        gate.set()
    d.close(5)
    assert slack.names() == ["a", "b", "c"]  # arrival order kept


def test_a_dropped_alert_is_not_remembered_as_sent(metrics: Metrics) -> None:
    gate = threading.Event()
    slack = RecordingSink("slack", gate)
    d = Dispatcher(metrics, slack=slack, queue_size=1)
    d.submit(outcome("a"))
    assert slack.started.wait(5)
    d.submit(outcome("b"))
    assert d.submit(outcome("c")) is False  # dropped
    gate.set()
    slack.wait_for(2)
    assert d.submit(outcome("c")) is True  # not "deduplicated": it never went out
    d.close(5)
    assert slack.names() == ["a", "b", "c"]
    assert count(metrics, "slack", "deduplicated") == 0


def test_a_drop_on_one_channel_does_not_silence_the_retry_there(metrics: Metrics) -> None:
    gate = threading.Event()
    events, slack = RecordingSink("event"), RecordingSink("slack", gate)
    d = Dispatcher(metrics, events=events, slack=slack, queue_size=1)
    d.submit(outcome("a"))
    assert slack.started.wait(5)
    events.wait_for(1)
    d.submit(outcome("b"))
    events.wait_for(2)  # the Events queue is empty again, Slack's is full
    assert d.submit(outcome("c")) is False  # Slack dropped it, Events queued it
    gate.set()
    slack.wait_for(2)
    events.wait_for(3)
    assert d.submit(outcome("c")) is True  # Slack gets the retry...
    d.close(5)
    assert slack.names() == ["a", "b", "c"]
    assert events.names() == ["a", "b", "c"]  # ...Events already had it
    assert count(metrics, "event", "deduplicated") == 1


def test_close_delivers_what_is_queued(metrics: Metrics) -> None:
    events = RecordingSink("event")
    d = Dispatcher(metrics, events=events)
    for i in range(50):
        d.submit(outcome(f"w{i}"))
    d.close(10)
    assert events.names() == [f"w{i}" for i in range(50)]


def test_close_gives_up_at_the_deadline_and_counts_what_it_discards(metrics: Metrics) -> None:
    gate = threading.Event()
    slack = RecordingSink("slack", gate)
    d = Dispatcher(metrics, slack=slack)
    try:
        for i in range(5):
            d.submit(outcome(f"w{i}"))
        assert slack.started.wait(5)
        started = time.monotonic()
        d.close(0.3)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"close took {elapsed:.2f}s with a 0.3s deadline"
        assert count(metrics, "slack", "dropped") == 4  # w1..w4; w0 is in flight
        assert d.submit(outcome("late")) is False  # closed: nothing more is queued
        assert count(metrics, "slack", "dropped") == 5
    finally:
        gate.set()
    assert not slack.closed  # its worker was still busy: the session is left alone


def test_identical_failures_for_the_same_object_notify_once_per_window(
        metrics: Metrics) -> None:
    now = [1000.0]
    events, slack = RecordingSink("event"), RecordingSink("slack")
    d = Dispatcher(metrics, events=events, slack=slack, dedup_seconds=600,
                   clock=lambda: now[0])
    assert d.submit(outcome("web")) is True
    assert d.submit(outcome("web")) is False  # same object, same failures
    assert count(metrics, "slack", "deduplicated") == 1
    assert count(metrics, "event", "deduplicated") == 1
    assert d.submit(outcome("web", messages=(DENY, WARN))) is True  # different failures
    assert d.submit(outcome("web", namespace="other")) is True  # different object
    now[0] += 599
    assert d.submit(outcome("web")) is False
    now[0] += 2  # 601 s after the first alert
    assert d.submit(outcome("web")) is True
    d.close(5)
    assert slack.names() == ["web"] * 4
    assert len(events.delivered) == 4


def test_dedup_window_zero_disables_it(metrics: Metrics) -> None:
    slack = RecordingSink("slack")
    d = Dispatcher(metrics, slack=slack, dedup_seconds=0)
    assert d.submit(outcome("web")) and d.submit(outcome("web"))
    d.close(5)
    assert len(slack.delivered) == 2


def test_pods_a_controller_creates_do_not_notify(metrics: Metrics) -> None:
    events, slack = RecordingSink("event"), RecordingSink("slack")
    d = Dispatcher(metrics, events=events, slack=slack)
    assert d.submit(outcome("web-5d4f-x2x7q", kind="Pod", owned=True)) is False
    assert d.submit(outcome("singleton", kind="Pod")) is True  # no owner: it notifies
    d.close(5)
    assert events.names() == slack.names() == ["singleton"]
    assert count(metrics, "slack", "deduplicated") == 1
    assert count(metrics, "event", "deduplicated") == 1


@pytest.mark.parametrize("case", [
    # A person creating a Pod that names an owner: the owner reported nothing of it.
    {"username": "jane"},
    # `kubectl debug` adding a privileged ephemeral container to a controller's Pod.
    {"username": "jane", "operation": "UPDATE", "sub_resource": "ephemeralcontainers"},
    # Even a controller's UPDATE is not the Pod its owner's spec described.
    {"operation": "UPDATE"},
])
def test_an_owned_pod_notifies_unless_its_controller_created_it(
        metrics: Metrics, case: dict[str, str]) -> None:
    events = RecordingSink("event")
    d = Dispatcher(metrics, events=events)
    assert d.submit(outcome("web-5d4f-x2x7q", kind="Pod", owned=True, **case)) is False
    d.close(5)
    assert events.names() == ["web-5d4f-x2x7q"]
    assert count(metrics, "event", "deduplicated") == 0


def test_a_failing_sink_is_counted_and_its_worker_carries_on(metrics: Metrics) -> None:
    events = RecordingSink("event", fail_first=True)
    d = Dispatcher(metrics, events=events)
    d.submit(outcome("first"))
    d.submit(outcome("second"))
    d.close(5)
    assert events.names() == ["second"]
    assert count(metrics, "event", "failed") == 1


def test_a_slow_channel_does_not_hold_up_the_other(metrics: Metrics) -> None:
    gate = threading.Event()
    events, slack = RecordingSink("event"), RecordingSink("slack", gate)
    d = Dispatcher(metrics, events=events, slack=slack)
    try:
        for i in range(3):
            d.submit(outcome(f"w{i}"))
        events.wait_for(3)  # while Slack is stuck on w0
        assert slack.delivered == []
    finally:
        gate.set()
    d.close(5)


def test_recent_alerts_memory_is_bounded() -> None:
    recent = RecentAlerts(600, max_entries=3)
    for key in "abcde":
        assert recent.check_and_remember(key) is False
    assert len(recent) == 3
    assert recent.check_and_remember("e") is True
    assert recent.check_and_remember("a") is False  # forgotten: oldest went first


def test_recent_alerts_expire() -> None:
    now = [0.0]
    recent = RecentAlerts(10, clock=lambda: now[0])
    recent.check_and_remember("a")
    now[0] = 5
    recent.check_and_remember("b")
    now[0] = 11
    assert recent.check_and_remember("b") is True
    assert len(recent) == 1  # "a" expired and was purged


def test_nothing_enabled_builds_a_null_notifier(metrics: Metrics) -> None:
    settings = Settings(notify=NotifySettings(events_enabled=False),
                        slack=SlackSettings(enabled=False))
    assert isinstance(build_notifier(settings, None, metrics), NullNotifier)


def test_a_namespace_has_a_budget_of_notifications() -> None:
    now = [0.0]
    budget = NamespaceBudget(burst=3, per_second=0.5, clock=lambda: now[0])
    assert [budget.allow("a") for _ in range(4)] == [True, True, True, False]
    assert budget.allow("b")  # each namespace its own
    now[0] = 1.0
    assert not budget.allow("a")  # half a token
    now[0] = 2.0
    assert budget.allow("a") and not budget.allow("a")


def test_a_flood_for_one_namespace_does_not_crowd_out_the_others(metrics: Metrics) -> None:
    """Reviews with distinct names (past the de-duplication), forged or not: the
    namespace's burst notifies, the rest is dropped and counted, others still notify."""
    events = RecordingSink("event")
    d = Dispatcher(metrics, events=events, clock=lambda: 0.0)
    for i in range(NAMESPACE_BURST + 40):
        d.submit(outcome(f"web-{i}", namespace="flooded"))
    d.submit(outcome("web", namespace="quiet"))
    d.close(5)
    assert len(events.names()) == NAMESPACE_BURST + 1 and events.names()[-1] == "web"
    assert count(metrics, "event", "dropped") == 40
