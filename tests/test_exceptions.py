"""MagTapeException: validation, admission of the objects, watching, warnings, metrics, reminders.

Invalid exceptions are refused by MagTape's own webhook with every problem
named; exceptions are picked up from the API (the shared fake API server)
without a restart; exempted failures are warned and counted; reminders reach
a real Slack-compatible receiver through the ordinary notifier.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from enforcementsupport import NOW, Clock, client_for, container, exception, pod
from fakekube import FakeKube, Resource
from informersupport import informers_for
from magtape.enforcement import EnforcementState, Enforcer, utc_now
from magtape.enforcement.exceptions import InvalidException, parse_exception
from magtape.enforcement.overrides import parse_config
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.engine.store import PolicyStore
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.notify.dispatcher import Dispatcher
from magtape.notify.slack import SlackSender
from magtape.notify.slack_payload import PRETEXT_REMINDER
from magtape.policy import DenyLevel
from magtape.review import make_review
from magtape.settings import (
    ExceptionSettings,
    IdentitySettings,
    NotifySettings,
    Settings,
    SlackSettings,
)
from magtape.wiring.enforcement import EXCEPTIONS as EXCEPTIONS_REF
from magtape.wiring.enforcement import build_enforcer, watch_enforcement
from magtape.wiring.reminders import ExpiryReminders
from notifysupport import receiver

MAX = timedelta(days=90)
KNOWN = frozenset({"MT1003", "MT2001"})
PRIV = container("app", privileged=True)


def without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


INVALID_TABLE = [
    (without(exception(), "spec", "expiresAt"), "spec.expiresAt is missing"),
    (exception(expires=NOW + timedelta(days=91)),
     "more than 90 days after creation; the latest allowed is 2027-01-30T12:00:00Z"),
    (exception(checks=("MT9999",)), "unknown check ID(s) MT9999"),
    (exception(checks=()), "spec.checks is empty"),
    (exception(kinds=["Pod"]), "spec.match needs names or a selector"),
    # What would match every object of the namespace is no narrower than nothing.
    *((exception(**match), "an exception never covers a whole namespace") for match in (
        {"names": ["*"]}, {"names": ["legacy-*", "*-*"]}, {"names": ["?*.*"]},
        {"selector": {}}, {"selector": {"matchLabels": {}}},
        {"selector": {"matchExpressions": []}},
        {"selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                            "values": ["prod"]}]}},
        {"selector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}},
        {"names": ["*"], "selector": {}})),
    (exception(names=["Legacy_*"]), "is not an object name or a pattern"),
    (exception(selector={"matchExpressions": [{"key": "a", "operator": "Near"}]}),
     "operator 'Near' is invalid"),
    (without(exception(), "spec", "reason"), "spec.reason is missing"),
    (without(without(exception(), "spec", "owner"), "spec", "ticket"),
     "spec.owner or spec.ticket is required"),
    (exception(names=[f"n{i}" for i in range(65)]), "has 65 entries; at most 64"),
    ({**exception(), "spec": {**exception()["spec"], "expiresAt": "next tuesday"}},
     "is not an RFC 3339 time"),
]


@pytest.mark.parametrize("obj, problem", INVALID_TABLE)
def test_invalid_exceptions_are_refused_saying_what_to_fix(obj: dict[str, Any],
                                                           problem: str) -> None:
    with pytest.raises(InvalidException) as info:
        parse_exception(obj, max_lifetime=MAX, known_checks=KNOWN)
    assert problem in str(info.value)
    assert str(info.value).startswith("MagTapeException team-a/legacy-priv is invalid: ")


@pytest.mark.parametrize("match", [
    {"names": ["legacy-*"]}, {"names": ["*-agent"]}, {"selector": {"matchLabels": {"app": "a"}}},
    {"selector": {"matchExpressions": [{"key": "vendor", "operator": "Exists"}]}},
    {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}},
    # A broad part is fine beside one that narrows: names and selector must both match.
    {"names": ["*"], "selector": {"matchLabels": {"app": "a"}}},
    {"names": ["legacy-*"], "selector": {"matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["prod"]}]}},
])
def test_a_match_that_names_what_it_exempts_is_accepted(match: dict[str, Any]) -> None:
    parse_exception(exception(**match), max_lifetime=MAX, known_checks=KNOWN)


def test_exactly_the_maximum_lifetime_is_accepted() -> None:
    parsed = parse_exception(exception(expires=NOW + MAX), max_lifetime=MAX, known_checks=KNOWN)
    assert parsed.expires_at == NOW + MAX and parsed.checks == {"MT2001"}


# -- MagTape's webhook for MagTapeException objects --------------------------------


def exception_review(obj: dict[str, Any], operation: str = "CREATE",
                     old: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(make_review(obj, "team-a", operation=operation).raw)
    if old is not None:
        doc["request"]["oldObject"] = old
    return doc


def exception_client(engine: EmbeddedEngine, clock: Clock, max_days: float = 90) -> Any:
    state = EnforcementState()
    state.set_known_checks(KNOWN)
    return client_for(engine, Enforcer(state, DenyLevel.LOW, clock=clock),
                      exceptions={"max_days": max_days})


@pytest.mark.parametrize("obj, allowed, message", [
    (exception(created=None), True, None),
    (without(exception(created=None), "spec", "expiresAt"), False, "spec.expiresAt is missing"),
    (exception(created=None, expires=NOW + timedelta(days=90, seconds=1)), False,
     "more than 90 days after creation"),
    (exception(created=None, checks=("MT2001", "MT0000")), False,
     "unknown check ID(s) MT0000; known: MT1003, MT2001"),
])
def test_the_webhook_refuses_invalid_exceptions(builtin_engine: EmbeddedEngine,
                                                obj: dict[str, Any], allowed: bool,
                                                message: str | None) -> None:
    client = exception_client(builtin_engine, Clock())
    resp = client.post("/", json=exception_review(obj)).get_json()["response"]
    assert resp["allowed"] is allowed
    if message is None:
        assert "status" not in resp
    else:
        assert resp["status"]["code"] == 403
        assert resp["status"]["message"].startswith("MagTapeException team-a/legacy-priv is "
                                                    "invalid: ")
        assert message in resp["status"]["message"]


def test_the_lifetime_counts_from_creation_so_an_update_cannot_stretch_it(
        builtin_engine: EmbeddedEngine) -> None:
    clock = Clock(NOW + timedelta(days=60))  # an exception created 60 days ago is edited
    client = exception_client(builtin_engine, clock)
    old = exception()  # created NOW, expires NOW+30d
    stretched = exception(expires=NOW + timedelta(days=120))
    resp = client.post("/", json=exception_review(stretched, "UPDATE", old)).get_json()
    assert resp["response"]["allowed"] is False
    assert "the latest allowed is 2027-01-30T12:00:00Z" in resp["response"]["status"]["message"]
    fine = exception(expires=NOW + timedelta(days=89))
    resp = client.post("/", json=exception_review(fine, "UPDATE", old)).get_json()
    assert resp["response"]["allowed"] is True


def test_the_maximum_lifetime_is_configurable(builtin_engine: EmbeddedEngine) -> None:
    client = exception_client(builtin_engine, Clock(), max_days=7)
    obj = exception(created=None, expires=NOW + timedelta(days=8))
    resp = client.post("/", json=exception_review(obj)).get_json()["response"]
    assert resp["allowed"] is False and "more than 7 days" in resp["status"]["message"]


# -- exempted failures: warnings and metrics ----------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_an_exempted_failure_is_warned_and_counted(builtin_engine: EmbeddedEngine) -> None:
    metrics = Metrics(CollectorRegistry())
    state = EnforcementState(exceptions=[parse_exception(exception(), max_lifetime=MAX)])
    client = client_for(builtin_engine, Enforcer(state, DenyLevel.LOW, clock=Clock()), metrics)
    doc = json.loads(make_review(pod("legacy-1", PRIV), "team-a").raw)
    resp = client.post("/", json=doc).get_json()["response"]
    assert resp["allowed"] is True
    assert resp["warnings"] == ['[FAIL] HIGH - Found privileged Security Context for container '
                                '"app" (MT2001) [exempted by MagTapeException '
                                'team-a/legacy-priv until 2026-12-01T12:00:00Z]']
    labels = {"policy": "privileged-pod", "namespace": "team-a"}
    assert sample(metrics, "magtape_policy_evaluations_total", result="exempted", **labels) == 1
    assert sample(metrics, "magtape_policy_evaluations_total", result="fail", **labels) == 0
    # The same Pod without the exception's name pattern fails as before.
    doc = json.loads(make_review(pod("web-1", PRIV), "team-a").raw)
    assert client.post("/", json=doc).get_json()["response"]["allowed"] is False
    assert sample(metrics, "magtape_policy_evaluations_total", result="fail", **labels) == 1


def test_would_deny_counts_what_overrides_and_dates_let_through(
        builtin_engine: EmbeddedEngine) -> None:
    metrics = Metrics(CollectorRegistry())
    config = parse_config("checks: {MT2001: {denyFrom: 2026-12-01}, MT1003: {enforce: warn}}")
    client = client_for(builtin_engine, Enforcer(EnforcementState(config), DenyLevel.HIGH,
                                                 clock=Clock()), metrics)
    for name in ("a", "b"):
        obj = pod(name, container("app", privileged=True, limits=False))
        resp = client.post("/", json=json.loads(make_review(obj, "team-a").raw)).get_json()
        assert resp["response"]["allowed"] is True
        assert '(MT2001) [MT2001 will block from 2026-12-01]' in resp["response"]["warnings"][0]
    assert sample(metrics, "magtape_would_deny_total", policy="privileged-pod") == 2
    assert sample(metrics, "magtape_would_deny_total", policy="resource-limits") == 2
    assert sample(metrics, "magtape_would_deny_total", policy="liveness-probe") == 0


# -- watching the cluster -------------------------------------------------------------


EXCEPTIONS = Resource("magtape.k8s.t-mobile.com/v1alpha1", "magtapeexceptions",
                      "MagTapeException", True)


def test_exceptions_and_overrides_are_watched_and_apply_without_a_restart(
        fake_kube: FakeKube, builtin_engine: EmbeddedEngine) -> None:
    fake_kube.register(EXCEPTIONS)
    settings = Settings(identity=IdentitySettings(namespace="magtape-system"),
                        exceptions=ExceptionSettings(reminder_hours=0))
    state = EnforcementState()
    informers = informers_for(fake_kube)
    with ExitStack() as stack:
        config = watch_enforcement(settings, informers, state, NullNotifier(), stack)
        informers.start()
        stack.callback(informers.stop)
        client = client_for(builtin_engine, Enforcer(state, DenyLevel.LOW))
        doc = json.loads(make_review(pod("legacy-1", PRIV), "team-a").raw)

        def allowed() -> bool:
            return bool(client.post("/", json=doc).get_json()["response"]["allowed"])

        assert not allowed()
        # The API server stamps creationTimestamp with the real time: expire 30 days after it.
        fake_kube.seed(exception(expires=utc_now() + timedelta(days=30), created=None))
        fake_kube.wait_for(lambda: state.exceptions_in("team-a"), what="the exception")
        assert allowed()
        fake_kube.delete("magtape.k8s.t-mobile.com/v1alpha1", "magtapeexceptions",
                         "legacy-priv", "team-a")
        fake_kube.wait_for(lambda: not state.exceptions_in("team-a"), what="the deletion")
        assert not allowed()

        # The overrides ConfigMap: a good document applies, a broken one keeps the last good.
        configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "magtape-enforcement", "namespace": "magtape-system"},
                     "data": {"enforcement.yaml": "checks: {MT2001: {enforce: warn}}"}}
        fake_kube.seed(configmap)
        fake_kube.wait_for(lambda: state.config.checks, what="the overrides")
        assert allowed()
        broken = {**configmap, "data": {"enforcement.yaml": "checks: {MT2001: {enforce: block}}"}}
        fake_kube.seed(broken)
        fake_kube.wait_for(lambda: config.last_error, what="the refusal")
        assert "checks.MT2001.enforce='block' is invalid: accepted deny, warn, off" in str(
            config.last_error)
        assert allowed()  # "block" is not accepted: the last good document stays in force
        fake_kube.delete("v1", "configmaps", "magtape-enforcement", "magtape-system")
        fake_kube.wait_for(lambda: not state.config.checks, what="the defaults")
        assert not allowed()


def test_an_exception_created_past_the_webhook_is_ignored_when_invalid(
        fake_kube: FakeKube) -> None:
    fake_kube.register(EXCEPTIONS)
    bad = without(exception("no-expiry"), "spec", "expiresAt")
    good = exception("good", expires=utc_now() + timedelta(days=10), created=None)
    fake_kube.seed(bad, good)
    state = EnforcementState()
    informers = informers_for(fake_kube)
    with ExitStack() as stack:
        watch_enforcement(Settings(exceptions=ExceptionSettings(reminder_hours=0)), informers,
                          state, NullNotifier(), stack)
        informers.start()
        stack.callback(informers.stop)
        fake_kube.wait_for(lambda: informers.informer(EXCEPTIONS_REF).synced.is_set(),
                           what="the first list")
        assert [e.name for e in state.all_exceptions()] == ["good"]


# -- reminders --------------------------------------------------------------------


def test_a_reminder_goes_to_slack_once_before_expiry() -> None:
    state = EnforcementState(exceptions=[parse_exception(
        exception(expires=NOW + timedelta(days=5)), max_lifetime=MAX)])
    clock = Clock()
    with receiver() as slack:
        settings = Settings(slack=SlackSettings(enabled=True, default_url=slack.url()),
                            notify=NotifySettings(events_enabled=False))
        metrics = Metrics(CollectorRegistry())
        notifier = Dispatcher(metrics, slack=SlackSender(settings, metrics))
        reminders = ExpiryReminders(state, notifier, timedelta(days=3), DenyLevel.LOW, clock)
        assert reminders.run_once() == []  # five days left: not yet
        clock.advance(days=2, seconds=1)
        assert [e.name for e in reminders.run_once()] == ["legacy-priv"]
        assert reminders.run_once() == []  # reminded once
        posts = slack.wait_for(1)
        notifier.close(5)
    attachment = posts[0].body["attachments"][0]
    assert attachment["pretext"] == PRETEXT_REMINDER
    assert ("MagTapeException team-a/legacy-priv for MT2001 expires at 2026-11-06T12:00:00Z "
            "(in 2d 23h)") in attachment["text"]
    assert "owner team-a@example.com, ticket OPS-1234" in attachment["text"]
    assert len(posts) == 1
    clock.advance(days=3)  # expired: nothing more to remind
    assert reminders.run_once() == []


def test_the_server_wiring_takes_check_ids_and_namespace_labels_from_the_policy_store() -> None:
    engine = EmbeddedEngine(timeout_seconds=10, workers=1)
    try:
        store = PolicyStore(engine, None, builtin_modules())
        store.load_now()
        enforcer, _ = build_enforcer(Settings(), store)
        assert enforcer.state.known_checks is not None
        assert {"MT1003", "MT2001"} <= enforcer.state.known_checks
        enforcer.state.set_config(parse_config(
            "namespaces: [{selector: {matchLabels: {tier: prod}}, denyLevel: HIGH}]"))
        assert enforcer.deny_level_for("shop") is DenyLevel.LOW
        store.set_data(("kubernetes", "namespaces"),
                       {"shop": {"metadata": {"name": "shop", "labels": {"tier": "prod"}}}})
        assert enforcer.deny_level_for("shop") is DenyLevel.HIGH  # replicated labels, live
    finally:
        engine.close()
