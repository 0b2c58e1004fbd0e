"""The one evaluator (magtape.enforcement.Enforcer) with the built-in policies and real engine.

Table-driven: what an exception matches, when it stops applying (moved by an
injected clock, never by sleeping), per-check ``enforce`` and ``denyFrom``,
and per-namespace deny levels by label selector.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from enforcementsupport import NOW, Clock, container, deployment, exception, pod
from magtape.decision import Decision, Verdict
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.exceptions import parse_exception
from magtape.enforcement.overrides import ConfigInvalid, Enforce, parse_config
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import DenyLevel
from magtape.review import make_review

MAX = timedelta(days=90)
PRIV = container("app", privileged=True)


def enforcer(*exceptions: dict[str, Any], config: str = "", clock: Clock | None = None,
             level: DenyLevel = DenyLevel.LOW,
             namespaces: dict[str, dict[str, str]] | None = None) -> Enforcer:
    state = EnforcementState(parse_config(config),
                             [parse_exception(e, max_lifetime=MAX) for e in exceptions])
    labels = namespaces or {}
    return Enforcer(state, level, namespace_labels=labels.get, clock=clock or Clock())


def decide(e: Enforcer, engine: EmbeddedEngine, obj: dict[str, Any]) -> Decision:
    review = make_review(obj, obj["metadata"]["namespace"])
    return e.decide(review, engine.evaluate)[1]


def verdicts(d: Decision) -> dict[str, str]:
    return {f.violation.errcode + ":" + str((f.violation.details or {}).get("container", "")):
            f.verdict.value for f in d.findings}


MATCH_TABLE = [
    # spec.match, object, exempted?
    ({"names": ["legacy-*"]}, pod("legacy-7f9c", PRIV), True),
    ({"names": ["legacy-*"]}, pod("web-7f9c", PRIV), False),
    ({"names": ["legacy"]}, pod("legacy", PRIV), True),
    ({"names": ["legacy"]}, pod("legacy-2", PRIV), False),
    ({"names": ["legacy-?"]}, pod("legacy-2", PRIV), True),
    ({"names": ["legacy-*"], "kinds": ["Pod"]}, pod("legacy-1", PRIV), True),
    ({"names": ["legacy-*"], "kinds": ["Deployment"]}, pod("legacy-1", PRIV), False),
    ({"names": ["legacy-*"], "kinds": ["Deployment"]}, deployment("legacy-1", PRIV), True),
    ({"selector": {"matchLabels": {"app": "agent"}}},
     pod("x", PRIV, labels={"app": "agent"}), True),
    ({"selector": {"matchLabels": {"app": "agent"}}},
     pod("x", PRIV, labels={"app": "web"}), False),
    ({"selector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                         "values": ["infra", "ops"]}]}},
     pod("x", PRIV, labels={"tier": "ops"}), True),
    # Only negative requirements need names beside them (alone they would cover
    # the namespace: tests/test_exceptions.py).
    ({"names": ["x"], "selector": {"matchExpressions": [{"key": "tier",
                                                         "operator": "DoesNotExist"}]}},
     pod("x", PRIV, labels={"tier": "ops"}), False),
    ({"names": ["x"], "selector": {"matchExpressions": [{"key": "tier",
                                                         "operator": "DoesNotExist"}]}},
     pod("x", PRIV), True),
    ({"names": ["legacy-*"], "containers": ["app"]}, pod("legacy-1", PRIV), True),
    ({"names": ["legacy-*"], "containers": ["sidecar"]}, pod("legacy-1", PRIV), False),
]


@pytest.mark.parametrize("match, obj, exempted", MATCH_TABLE)
def test_an_exception_applies_to_exactly_what_it_matches(
        builtin_engine: EmbeddedEngine, match: dict[str, Any], obj: dict[str, Any],
        exempted: bool) -> None:
    d = decide(enforcer(exception(**match)), builtin_engine, obj)
    assert d.allowed is exempted
    assert verdicts(d) == {"MT2001:app": "exempted" if exempted else "deny"}


def test_an_exception_covers_only_its_checks_namespace_and_containers(
        builtin_engine: EmbeddedEngine) -> None:
    e = enforcer(exception(names=["legacy-*"], containers=["agent"]))
    obj = pod("legacy-1", container("agent", privileged=True),
              container("app", privileged=True, limits=False))
    d = decide(e, builtin_engine, obj)
    # The other container's MT2001 still denies; MT1003 is another check (warned at LOW).
    assert verdicts(d) == {"MT2001:agent": "exempted", "MT2001:app": "deny",
                           "MT1003:app": "warn"}
    assert not d.allowed
    other_ns = pod("legacy-1", container("agent", privileged=True), namespace="team-b")
    assert not decide(e, builtin_engine, other_ns).allowed


def test_an_exempted_failure_is_a_warning_naming_the_exception_and_its_expiry(
        builtin_engine: EmbeddedEngine) -> None:
    d = decide(enforcer(exception()), builtin_engine, pod("legacy-1", PRIV))
    assert d.allowed
    assert d.messages == ['[FAIL] HIGH - Found privileged Security Context for container "app" '
                          "(MT2001) [exempted by MagTapeException team-a/legacy-priv until "
                          "2026-12-01T12:00:00Z]"]
    assert d.exempted_policies == {"privileged-pod"}


def test_an_exception_stops_applying_at_expires_at_without_a_restart(
        builtin_engine: EmbeddedEngine) -> None:
    clock = Clock()
    e = enforcer(exception(expires=NOW + timedelta(hours=2)), clock=clock)
    obj = pod("legacy-1", PRIV)
    assert decide(e, builtin_engine, obj).allowed
    clock.advance(hours=2, seconds=-1)
    assert decide(e, builtin_engine, obj).allowed
    clock.advance(seconds=1)  # exactly expiresAt: no longer in force
    d = decide(e, builtin_engine, obj)
    assert not d.allowed and verdicts(d) == {"MT2001:app": "deny"}


ENFORCE_TABLE = [
    # overrides, deny level, object, allowed, verdicts, would_deny
    ("checks: {MT2001: {enforce: warn}}", "LOW", pod("p", PRIV), True,
     {"MT2001:app": "warn"}, ("privileged-pod",)),
    ("checks: {MT2001: {enforce: off}}", "LOW", pod("p", PRIV), True, {}, ("privileged-pod",)),
    ("checks: {MT2001: {enforce: off}}", "OFF", pod("p", PRIV), True, {}, ()),
    ("checks: {MT1003: {enforce: deny}}", "LOW", pod("p", container("app", limits=False)),
     False, {"MT1003:app": "deny"}, ()),
    ("checks: {MT1003: {enforce: deny}}", "OFF", pod("p", container("app", limits=False)),
     False, {"MT1003:app": "deny"}, ()),
    ("checks: {MT1003: {enforce: warn}}", "HIGH", pod("p", container("app", limits=False)),
     True, {"MT1003:app": "warn"}, ("resource-limits",)),
    ("", "LOW", pod("p", container("app", limits=False)), True, {"MT1003:app": "warn"}, ()),
    ("", "HIGH", pod("p", container("app", limits=False)), False, {"MT1003:app": "deny"}, ()),
]


@pytest.mark.parametrize("config, level, obj, allowed, expected, would", ENFORCE_TABLE)
def test_per_check_enforce(builtin_engine: EmbeddedEngine, config: str, level: str,
                           obj: dict[str, Any], allowed: bool, expected: dict[str, str],
                           would: tuple[str, ...]) -> None:
    d = decide(enforcer(config=config, level=DenyLevel(level)), builtin_engine, obj)
    assert (d.allowed, verdicts(d), d.would_deny) == (allowed, expected, would)


def test_deny_from_warns_until_the_date_then_denies(builtin_engine: EmbeddedEngine) -> None:
    clock = Clock()
    e = enforcer(config="checks: {MT2001: {denyFrom: 2026-12-01}}", clock=clock)
    obj = pod("p", PRIV)
    d = decide(e, builtin_engine, obj)
    assert d.allowed and d.would_deny == ("privileged-pod",)
    assert d.messages == ['[FAIL] HIGH - Found privileged Security Context for container "app" '
                          "(MT2001) [MT2001 will block from 2026-12-01]"]
    clock.now = clock.now.replace(month=12, day=1, hour=0)  # midnight UTC on the date
    d = decide(e, builtin_engine, obj)
    assert not d.allowed and d.would_deny == () and verdicts(d) == {"MT2001:app": "deny"}


def test_deny_from_on_a_check_below_the_deny_level_changes_nothing(
        builtin_engine: EmbeddedEngine) -> None:
    e = enforcer(config="checks: {MT1003: {denyFrom: 2027-01-01}}")
    d = decide(e, builtin_engine, pod("p", container("app", limits=False)))
    assert d.allowed and verdicts(d) == {"MT1003:app": "warn"} and d.would_deny == ()


NAMESPACE_RULES = """
namespaces:
  - selector: {matchLabels: {tier: production}}
    denyLevel: HIGH
  - selector: {matchExpressions: [{key: sandbox, operator: Exists}]}
    denyLevel: "OFF"
"""


@pytest.mark.parametrize("namespace, obj_ns_labels, allowed, level", [
    ("prod", {"tier": "production"}, False, DenyLevel.HIGH),  # LOW failure denied at HIGH
    ("play", {"sandbox": "yes"}, True, DenyLevel.OFF),
    ("dev", {"tier": "dev"}, True, DenyLevel.LOW),  # no rule: MAGTAPE_DENY_LEVEL
    ("unknown", None, True, DenyLevel.LOW),  # namespace not replicated yet: the default
])
def test_per_namespace_deny_level_by_label_selector(
        builtin_engine: EmbeddedEngine, namespace: str, obj_ns_labels: dict[str, str] | None,
        allowed: bool, level: DenyLevel) -> None:
    labels = {namespace: obj_ns_labels} if obj_ns_labels is not None else {}
    e = enforcer(config=NAMESPACE_RULES, namespaces=labels)
    d = decide(e, builtin_engine, pod("p", container("app", limits=False), namespace=namespace))
    assert d.allowed is allowed and d.deny_level is level


def test_privileged_in_an_off_namespace_still_reports(builtin_engine: EmbeddedEngine) -> None:
    e = enforcer(config=NAMESPACE_RULES, namespaces={"play": {"sandbox": "1"}})
    d = decide(e, builtin_engine, pod("p", PRIV, namespace="play"))
    assert d.allowed and verdicts(d) == {"MT2001:app": "warn"}


def test_an_exception_and_an_override_together(builtin_engine: EmbeddedEngine) -> None:
    e = enforcer(exception(), config="checks: {MT1003: {enforce: deny}}")
    d = decide(e, builtin_engine, pod("legacy-1", container("app", privileged=True,
                                                             limits=False)))
    assert verdicts(d) == {"MT2001:app": "exempted", "MT1003:app": "deny"}
    assert [v.errcode for v in d.denying] == ["MT1003"]
    assert not d.allowed and Verdict.EXEMPTED in {f.verdict for f in d.findings}


def test_deletions_are_never_denied(builtin_engine: EmbeddedEngine) -> None:
    e = enforcer(level=DenyLevel.HIGH)
    review = make_review(pod("p", PRIV), "team-a", operation="DELETE")
    evaluation, d = e.decide(review, builtin_engine.evaluate)
    assert d.allowed and d.violations == () and evaluation.results == ()


# -- the overrides document ----------------------------------------------------------


def test_the_overrides_document_parses_bare_yaml_off_and_dates() -> None:
    config = parse_config("""
allowExistingViolations: false
checks:
  MT1001: {enforce: off}
  MT2001: {enforce: deny, denyFrom: 2026-12-01}
  MT1003: {denyFrom: "2026-12-01T06:00:00Z"}
namespaces:
  - selector: {matchLabels: {sandbox: "yes"}}
    denyLevel: OFF
""")
    assert config.allow_existing_violations is False
    assert config.checks["MT1001"].enforce is Enforce.OFF
    assert config.checks["MT2001"].enforce is Enforce.DENY
    assert config.checks["MT2001"].deny_from == NOW.replace(month=12, day=1, hour=0)
    assert config.checks["MT1003"].deny_from == NOW.replace(month=12, day=1, hour=6)
    assert config.namespaces[0].deny_level is DenyLevel.OFF


@pytest.mark.parametrize("text, message", [
    ("check: {}", "unknown key(s) check; accepted checks, namespaces, allowExistingViolations"),
    ("checks: {MT1003: {enforce: block}}",
     "checks.MT1003.enforce='block' is invalid: accepted deny, warn, off"),
    ("checks: {MT1003: {denyFrom: soon}}", "checks.MT1003.denyFrom='soon' is invalid"),
    ("checks: {MT1003: {enforce: warn, until: x}}", "must be a mapping with enforce"),
    ("namespaces: [{selector: {}, denyLevel: STRICT}]",
     "namespaces[0].denyLevel='STRICT' is invalid: accepted OFF, LOW, MED, HIGH"),
    ("namespaces: [{selector: {matchLabels: {a: 1}}, denyLevel: LOW}]",
     "matchLabels must map label keys to string values"),
    ("namespaces: [{selector: {matchExpressions: [{key: a, operator: In}]}, denyLevel: LOW}]",
     "In needs at least one value"),
    ("allowExistingViolations: sometimes", "allowExistingViolations='sometimes' is invalid"),
    ("checks: [", "not valid YAML"),
])
def test_a_bad_overrides_document_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, "ConfigMap magtape-enforcement key enforcement.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("ConfigMap magtape-enforcement key enforcement.yaml")


def test_the_next_transition_is_the_earliest_future_expiry_or_deny_from() -> None:
    state = enforcer(exception("a", expires=NOW + timedelta(days=3)),
                     exception("b", expires=NOW + timedelta(days=1)),
                     config="checks: {MT1003: {denyFrom: 2026-11-01T18:00:00Z}}").state
    assert state.next_transition(NOW) == NOW + timedelta(hours=6)
    assert state.next_transition(NOW + timedelta(hours=6)) == NOW + timedelta(days=1)
    assert state.next_transition(NOW + timedelta(days=3)) is None
