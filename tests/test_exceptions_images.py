"""MagTapeException per control, per container, per image, with no bypass.

A Deployment in a restricted namespace runs a hardened app and a vendor
sidecar that fails three restricted controls. An exception for the sidecar's
image exempts exactly those failures; every variant in which one match field
(check, kind, name, namespace, container, image) does not match leaves the
Deployment denied. Decided by the webhook's Enforcer with the real engine and
the real PSS checks (policies/pss-*), the namespace's level from its label
in the replicated data, as admission reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from enforcementsupport import NOW, Clock, container, deployment, exception
from magtape.decision import Verdict
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.exceptions import InvalidException, parse_exception
from magtape.enforcement.overrides import parse_config
from magtape.enforcement.updates import update_review
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.podsecurity import is_pss_check
from magtape.policy import DenyLevel
from magtape.review import make_review

MAX = timedelta(days=90)
SIDECAR_IMAGE = "vendor.example/agent:2.1"
HARDENED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def app() -> dict[str, Any]:
    return {**container("app"), "securityContext": dict(HARDENED)}


def sidecar(image: str = SIDECAR_IMAGE, name: str = "agent") -> dict[str, Any]:
    return {**container(name), "image": image}


WEB = deployment("web", app(), sidecar())


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"k8s.t-mobile.com/pod-security": "restricted"}}}


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    engine = EmbeddedEngine(timeout_seconds=10, workers=1)
    data = {"kubernetes": {"namespaces": {n: namespace(n) for n in ("team-a", "team-b")}}}
    assert not engine.load(builtin_modules(), data).errors
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def sidecar_failures(engine: EmbeddedEngine) -> list[str]:
    """The controls the sidecar fails (the app passes them all)."""
    evaluation = engine.evaluate(make_review(WEB, "team-a"))
    pss = [v for v in evaluation.violations if is_pss_check(v.errcode)]
    assert pss, "the sidecar must fail restricted"
    assert {(v.details or {}).get("container") for v in pss} == {"agent"}
    return sorted({v.errcode for v in pss})


def sidecar_exception(checks: list[str], **changes: Any) -> dict[str, Any]:
    """Exempts the sidecar's image from ``checks`` for web's Deployment; ``changes``
    replaces one match field (or ``namespace``)."""
    namespace = changes.pop("namespace", "team-a")
    match = {"kinds": ["Deployment"], "names": ["web"], "containers": ["agent"],
             "images": ["vendor.example/agent:*"], **changes}
    return exception("vendor-agent", checks=tuple(checks), namespace=namespace,
                     expires=NOW + timedelta(days=30), **match)


def decide(engine: EmbeddedEngine, obj: dict[str, Any], *exceptions: dict[str, Any],
           at: Clock | None = None) -> Any:
    state = EnforcementState(exceptions=[parse_exception(e, max_lifetime=MAX)
                                         for e in exceptions])
    enforcer = Enforcer(state, DenyLevel.LOW, clock=at or Clock())
    namespace = obj["metadata"]["namespace"]
    return enforcer.decide(make_review(obj, namespace), engine.evaluate)[1]


def pss_verdicts(decision: Any) -> set[tuple[str, Verdict]]:
    return {(f.violation.errcode, f.verdict) for f in decision.findings
            if is_pss_check(f.violation.errcode)}


def test_without_an_exception_the_sidecar_is_denied(engine: EmbeddedEngine,
                                                    sidecar_failures: list[str]) -> None:
    decision = decide(engine, WEB)
    assert not decision.allowed
    assert pss_verdicts(decision) == {(c, Verdict.DENY) for c in sidecar_failures}


def test_an_exception_for_the_sidecars_image_lets_the_deployment_in(
        engine: EmbeddedEngine, sidecar_failures: list[str]) -> None:
    decision = decide(engine, WEB, sidecar_exception(sidecar_failures))
    assert decision.allowed
    assert pss_verdicts(decision) == {(c, Verdict.EXEMPTED) for c in sidecar_failures}


def test_the_exception_expiring_denies_again(engine: EmbeddedEngine,
                                             sidecar_failures: list[str]) -> None:
    later = Clock(NOW + timedelta(days=30, seconds=1))
    assert not decide(engine, WEB, sidecar_exception(sidecar_failures), at=later).allowed


def test_another_container_in_the_same_pod_is_not_exempted(
        engine: EmbeddedEngine, sidecar_failures: list[str]) -> None:
    """The image exception exempts the sidecar, not the pod: a debug container fails."""
    obj = deployment("web", app(), sidecar(), sidecar("busybox:1.36", name="debug"))
    decision = decide(engine, obj, sidecar_exception(sidecar_failures, containers=None))
    assert not decision.allowed
    by_container = {((f.violation.details or {}).get("container"), f.verdict)
                    for f in decision.findings if is_pss_check(f.violation.errcode)}
    assert by_container == {("agent", Verdict.EXEMPTED), ("debug", Verdict.DENY)}


# One match field at a time does not match: still denied (no bypass).
NOT_MATCHING = {
    "check": {"checks": ["MT3003"]},  # a control the sidecar does not fail
    "kind": {"kinds": ["StatefulSet"]},
    "name": {"names": ["web-*"]},  # web-* does not cover web
    "namespace": {"namespace": "team-b"},
    "container": {"containers": ["app"]},
    "image": {"images": ["vendor.example/agent:1.*"]},
    "image-registry": {"images": ["other.example/agent:*"]},
}


@pytest.mark.parametrize("field", sorted(NOT_MATCHING))
def test_a_non_matching_field_is_still_denied(engine: EmbeddedEngine,
                                              sidecar_failures: list[str], field: str) -> None:
    changes = dict(NOT_MATCHING[field])
    checks = changes.pop("checks", sidecar_failures)
    decision = decide(engine, WEB, sidecar_exception(checks, **changes))
    assert not decision.allowed, field
    assert not any(v == Verdict.EXEMPTED for _, v in pss_verdicts(decision)), field


@pytest.mark.parametrize("image", [
    "vendor.example/agent-evil:2.1",  # a look-alike repository
    "evil.example/vendor.example/agent:2.1",  # the trusted name as a path inside another
    "Vendor.example/agent:2.1",  # matched as written: case counts
])
def test_a_look_alike_image_is_still_denied(engine: EmbeddedEngine,
                                            sidecar_failures: list[str], image: str) -> None:
    obj = deployment("web", app(), sidecar(image))
    assert not decide(engine, obj, sidecar_exception(sidecar_failures)).allowed


def test_an_image_exception_never_covers_a_failure_without_an_image(
        engine: EmbeddedEngine) -> None:
    """MT2001 names the container but not the image: an image exception cannot cover it.
    (In a namespace without a PSS level, where MT2001 rather than MT3003 reports it.)"""
    priv = copy.deepcopy(WEB)
    priv["metadata"]["namespace"] = "team-c"
    priv["spec"]["template"]["spec"]["containers"][1]["securityContext"] = {"privileged": True}
    decision = decide(engine, priv, sidecar_exception(["MT2001"], namespace="team-c"))
    mt2001 = [f for f in decision.findings if f.violation.errcode == "MT2001"]
    assert mt2001 and all(f.verdict is Verdict.DENY for f in mt2001)


@pytest.mark.parametrize("images, problem", [
    (["*"], "a pattern of only wildcards would match every image"),
    (["**?"], "a pattern of only wildcards"),
    (["vendor example/agent"], "is not an image reference"),
    ([f"r.example/a{i}:*" for i in range(33)], "spec.match.images has 33 entries; at most 32"),
    (["r.example/" + "a" * 600], "longer than 512 characters"),
])
def test_invalid_image_patterns_are_refused(images: list[str], problem: str) -> None:
    with pytest.raises(InvalidException) as info:
        parse_exception(sidecar_exception(["MT3014"], images=images), max_lifetime=MAX)
    assert problem in str(info.value)


def test_a_digest_reference_is_accepted() -> None:
    digest = "vendor.example/agent@sha256:" + "a" * 64
    parsed = parse_exception(sidecar_exception(["MT3014"], images=[digest]), max_lifetime=MAX)
    assert parsed.images == (digest,)


def test_an_update_swapping_the_exempted_image_keeps_existing_failures_unless_told_not_to(
        engine: EmbeddedEngine, sidecar_failures: list[str]) -> None:
    """The UPDATE rule is by container and field: documented in docs/exceptions.md."""
    swapped = deployment("web", app(), sidecar("busybox:1.36"))
    review = update_review(WEB, swapped, "team-a")
    ex = [parse_exception(sidecar_exception(sidecar_failures), max_lifetime=MAX)]
    for allow, allowed in (("true", True), ("false", False)):
        config = parse_config(f"allowExistingViolations: {allow}")
        enforcer = Enforcer(EnforcementState(config, exceptions=ex), DenyLevel.LOW,
                            clock=Clock())
        decision = enforcer.decide(review, engine.evaluate)[1]
        assert decision.allowed is allowed, allow
        expected = Verdict.EXISTING if allowed else Verdict.DENY
        assert pss_verdicts(decision) == {(c, expected) for c in sidecar_failures}
