"""Derived objects follow their owner's verdict, and nothing else gets that verdict.

Requests are the AdmissionReviews the API server sends when a controller
creates a ReplicaSet or a Pod, answered by the admission app over the
built-in policies; owners are found by the same lookup ``magtape check
--old`` uses (OwnersFrom), the watch-fed one (OwnerIndex) is tested at the
end against the fake API server for what only it does (listing, watching,
keeping the last state while the API server fails). Every way to claim an
owner's verdict without being its controller must still be denied.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from enforcementsupport import NOW, Clock, client_for, container, deployment, exception
from fakekube import FakeKube
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.exceptions import parse_exception
from magtape.enforcement.inheritance import Inheritance, OwnersFrom
from magtape.engine.embedded import EmbeddedEngine
from magtape.kube.informers import Informers, WatchTimings
from magtape.kube.owners import OwnerIndex
from magtape.kube.rest import RawApi, ResourceRef
from magtape.metrics import Metrics
from magtape.policy import DenyLevel
from magtape.review import make_review
from magtape.settings import (
    DEFAULT_CONTROLLER_IDENTITIES,
    ConfigError,
    KindRef,
    Settings,
)

PRIV = '[FAIL] HIGH - Found privileged Security Context for container "{}" (MT2001)'
RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
DEPLOY_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"
NS = "legacy"


def owned(obj: dict[str, Any], owner: dict[str, Any], **ref: Any) -> dict[str, Any]:
    """``obj`` with a controller ownerReference to ``owner`` (fields overridable)."""
    out = copy.deepcopy(obj)
    meta = owner["metadata"]
    out["metadata"]["ownerReferences"] = [{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True, **ref}]
    return out


def with_uid(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["uid"] = uid
    return out


def web_deployment(*containers: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return with_uid(deployment("test-deploy02", *(containers or [container(
        "app", privileged=True)]), namespace=namespace), f"uid-deploy-{namespace}")


def replicaset_of(owner: dict[str, Any], *containers: dict[str, Any]) -> dict[str, Any]:
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "test-deploy02-6d4cf56db6",
                       "namespace": owner["metadata"]["namespace"], "labels": {"app": "web"}},
          "spec": copy.deepcopy(owner["spec"])}
    if containers:
        rs["spec"]["template"]["spec"]["containers"] = list(containers)
    return with_uid(owned(rs, owner), "uid-rs")


def pod_of(owner: dict[str, Any], *containers: dict[str, Any]) -> dict[str, Any]:
    template = owner["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "test-deploy02-6d4cf56db6-x7k2p",
                        "namespace": owner["metadata"]["namespace"],
                        "labels": dict(template["metadata"]["labels"])},
           "spec": copy.deepcopy(template["spec"])}
    if containers:
        pod["spec"]["containers"] = list(containers)
    return owned(pod, owner)


def admit(engine: EmbeddedEngine, obj: dict[str, Any], user: str, owners: list[dict[str, Any]],
          *, exceptions: tuple[dict[str, Any], ...] = (), controllers: Any = None,
          metrics: Metrics | None = None) -> dict[str, Any]:
    state = EnforcementState(exceptions=[
        parse_exception(e, max_lifetime=__import__("datetime").timedelta(days=90))
        for e in exceptions])
    inheritance = Inheritance(frozenset(DEFAULT_CONTROLLER_IDENTITIES if controllers is None
                                        else controllers), OwnersFrom(owners))
    enforcer = Enforcer(state, DenyLevel.LOW, clock=Clock(), inheritance=inheritance)
    client = client_for(engine, enforcer, metrics=metrics)
    doc = json.loads(make_review(obj, obj["metadata"]["namespace"], username=user).raw)
    response: dict[str, Any] = client.post("/", json=doc).get_json()["response"]
    return response


# ------------------------------------------------------------------ inherits


def test_a_rollouts_replicaset_inherits_the_deployments_failure(
        builtin_engine: EmbeddedEngine) -> None:
    deploy = web_deployment()
    resp = admit(builtin_engine, replicaset_of(deploy), DEPLOY_CONTROLLER, [deploy])
    assert resp["allowed"] is True
    assert resp["warnings"] == [PRIV.format("app") + " [inherited from Deployment "
                                "legacy/test-deploy02: already failing]"]


def test_a_recreated_pod_inherits_its_replicasets_failure(builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    resp = admit(builtin_engine, pod_of(rs), RS_CONTROLLER, [rs])
    assert resp["allowed"] is True
    assert resp["warnings"] == [PRIV.format("app") + " [inherited from ReplicaSet "
                                "legacy/test-deploy02-6d4cf56db6: already failing]"]


def test_the_controller_managers_own_user_may_inherit_too(builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    assert admit(builtin_engine, pod_of(rs), "system:kube-controller-manager",
                 [rs])["allowed"] is True


def test_an_exempted_owner_passes_on_its_exception_and_expiry(
        builtin_engine: EmbeddedEngine) -> None:
    deploy = web_deployment()
    legacy = exception("legacy-priv", namespace=NS, kinds=["Deployment"],
                       names=["test-deploy02"])
    resp = admit(builtin_engine, replicaset_of(deploy), DEPLOY_CONTROLLER, [deploy],
                 exceptions=(legacy,))
    assert resp["allowed"] is True
    assert resp["warnings"] == [PRIV.format("app") + " [inherited from Deployment "
                                "legacy/test-deploy02: exempted by MagTapeException "
                                "legacy/legacy-priv until 2026-12-01T12:00:00Z]"]


def test_a_pod_names_where_its_failure_started(builtin_engine: EmbeddedEngine) -> None:
    """Pod -> ReplicaSet -> exempted Deployment: the note names the exception."""
    deploy = web_deployment()
    rs = replicaset_of(deploy)
    legacy = exception("legacy-priv", namespace=NS, kinds=["Deployment"],
                       names=["test-deploy02"])
    resp = admit(builtin_engine, pod_of(rs), RS_CONTROLLER, [deploy, rs], exceptions=(legacy,))
    assert resp["allowed"] is True
    assert resp["warnings"] == [PRIV.format("app") + " [inherited from Deployment "
                                "legacy/test-deploy02 via ReplicaSet "
                                "legacy/test-deploy02-6d4cf56db6: exempted by MagTapeException "
                                "legacy/legacy-priv until 2026-12-01T12:00:00Z]"]


def test_inherited_failures_are_counted_as_inherited(builtin_engine: EmbeddedEngine) -> None:
    metrics = Metrics(CollectorRegistry())
    deploy = web_deployment()
    admit(builtin_engine, replicaset_of(deploy), DEPLOY_CONTROLLER, [deploy], metrics=metrics)
    value = metrics.registry.get_sample_value(
        "magtape_policy_evaluations_total",
        {"policy": "privileged-pod", "namespace": NS, "result": "inherited"})
    assert value == 1.0


# ------------------------------------------------------------------ no bypass


def test_a_user_with_a_forged_owner_reference_is_denied(builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    resp = admit(builtin_engine, pod_of(rs), "alice", [rs])
    assert resp["allowed"] is False
    assert resp["status"]["message"] == PRIV.format("app")


def test_no_controller_identity_configured_means_no_inheritance(
        builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    assert admit(builtin_engine, pod_of(rs), RS_CONTROLLER, [rs], controllers=())[
        "allowed"] is False


def test_a_missing_owner_is_no_owner(builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    assert admit(builtin_engine, pod_of(rs), RS_CONTROLLER, [])["allowed"] is False


@pytest.mark.parametrize("forged", [
    {"kind": "StatefulSet"},  # an owner of another kind with the same name and uid
    {"apiVersion": "batch/v1"},  # another group
    {"uid": "uid-of-something-else"},  # the name of an existing owner, not its uid
    {"name": "test-deploy02-other"},
    {"controller": False},  # an owner, not the controller
])
def test_a_reference_that_does_not_name_the_owner_exactly_is_denied(
        builtin_engine: EmbeddedEngine, forged: dict[str, Any]) -> None:
    rs = replicaset_of(web_deployment())
    pod = pod_of(rs)
    pod["metadata"]["ownerReferences"][0].update(forged)
    resp = admit(builtin_engine, pod, RS_CONTROLLER, [rs])
    assert resp["allowed"] is False


def test_an_owner_in_another_namespace_is_not_an_owner(builtin_engine: EmbeddedEngine) -> None:
    theirs = replicaset_of(web_deployment(namespace="other"))
    pod = pod_of(theirs)
    pod["metadata"]["namespace"] = NS  # same name, kind and uid, but in another namespace
    resp = admit(builtin_engine, pod, RS_CONTROLLER, [theirs])
    assert resp["allowed"] is False


def test_a_pod_that_differs_from_its_owners_template_is_judged_on_its_own(
        builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment(container("app")))  # the owner is compliant
    resp = admit(builtin_engine, pod_of(rs, container("app", privileged=True)), RS_CONTROLLER,
                 [rs])
    assert resp["allowed"] is False
    assert resp["status"]["message"] == PRIV.format("app")


def test_a_sidecar_the_owner_lacks_denies_while_the_owners_failure_is_inherited(
        builtin_engine: EmbeddedEngine) -> None:
    rs = replicaset_of(web_deployment())
    pod = pod_of(rs, container("app", privileged=True), container("mesh", privileged=True))
    resp = admit(builtin_engine, pod, RS_CONTROLLER, [rs])
    assert resp["allowed"] is False
    assert sorted(resp["warnings"]) == [
        PRIV.format("app") + " [inherited from ReplicaSet legacy/test-deploy02-6d4cf56db6: "
        "already failing]", PRIV.format("mesh")]


def test_an_exception_on_the_owner_does_not_cover_what_the_owner_lacks(
        builtin_engine: EmbeddedEngine) -> None:
    deploy = web_deployment(container("app"))
    legacy = exception("legacy-priv", namespace=NS, kinds=["Deployment"],
                       names=["test-deploy02"])
    resp = admit(builtin_engine, replicaset_of(deploy, container("app", privileged=True)),
                 DEPLOY_CONTROLLER, [deploy], exceptions=(legacy,))
    assert resp["allowed"] is False


# ------------------------------------------------------------------ settings


def test_controller_identities_setting() -> None:
    assert RS_CONTROLLER in Settings().exceptions.controller_identities
    assert "system:kube-controller-manager" in Settings().exceptions.controller_identities
    rollouts = "system:serviceaccount:argo-rollouts:argo-rollouts"
    s = Settings.from_env({"MAGTAPE_CONTROLLER_IDENTITIES": f"{RS_CONTROLLER}, {rollouts}",
                           "MAGTAPE_CONTROLLER_OWNER_KINDS":
                               "apps/v1/replicasets,argoproj.io/v1alpha1/rollouts"})
    assert s.exceptions.controller_identities == (RS_CONTROLLER, rollouts)
    assert s.exceptions.controller_owner_kinds == (
        KindRef("apps/v1", "replicasets"), KindRef("argoproj.io/v1alpha1", "rollouts"))
    assert Settings.from_env({"MAGTAPE_CONTROLLER_IDENTITIES": "none"}
                             ).exceptions.controller_identities == ()
    with pytest.raises(ConfigError, match="MAGTAPE_CONTROLLER_IDENTITIES='a b' is invalid"):
        Settings.from_env({"MAGTAPE_CONTROLLER_IDENTITIES": "a b"})


# ------------------------------------------------------------------ magtape check


def test_magtape_check_as_a_controller_with_old_owners_decides_as_the_webhook(
        tmp_path: Path) -> None:
    from io import StringIO

    import yaml

    from magtape.check import CheckOptions, run_check

    deploy = web_deployment()
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(deploy))
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(replicaset_of(deploy)))

    def check(user: str) -> tuple[int, dict[str, Any]]:
        out = StringIO()
        code = run_check(Settings(), CheckOptions(
            paths=(str(tmp_path / "rs.yaml"),), output="json", old=str(tmp_path / "live.yaml"),
            username=user), out, StringIO())
        return code, json.loads(out.getvalue())

    code, doc = check(DEPLOY_CONTROLLER)
    assert code == 0, doc
    assert "inherited from Deployment legacy/test-deploy02" in json.dumps(doc)
    code, _ = check("magtape-check")
    assert code == 1


# ------------------------------------------------------------------ the owner cache


def test_owner_cache_follows_the_api_and_keeps_owners_while_it_fails(
        fake_kube: FakeKube) -> None:
    deploy = web_deployment()
    created = fake_kube.seed(deploy)[0]
    informers = Informers(RawApi(fake_kube.api_client()),
                          WatchTimings(watch_timeout_seconds=5, backoff_max_seconds=0.2))
    informers.start()
    cache = OwnerIndex(informers,
                       [KindRef("apps/v1", "deployments"), KindRef("apps/v1", "replicasets")],
                       probe_namespace="magtape-system")
    cache.start()
    try:
        fake_kube.wait_for(lambda: cache.synced, timeout=10)
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "test-deploy02",
               "uid": created["metadata"]["uid"]}
        found = cache.owner(NS, ref)
        assert found is not None and found["metadata"]["uid"] == created["metadata"]["uid"]
        assert "status" not in found and "managedFields" not in found["metadata"]
        # the process' informer holds it once, for every part that follows Deployments
        assert informers.informer(ResourceRef("apps/v1", "deployments")).get(
            NS, "test-deploy02") is not None
        assert cache.owner("other", ref) is None
        # apps/v1 replicasets are not served by the fake: left out, no reflector for them
        assert cache.resources == ["apps/v1/deployments"]
        # the API server fails: the last known owners stay, a lookup never waits
        fake_kube.fail(500)
        fake_kube.end_watches()
        assert cache.owner(NS, ref) is not None
        fake_kube.clear_faults()
        fake_kube.delete("apps/v1", "deployments", "test-deploy02", NS)
        fake_kube.wait_for(lambda: cache.owner(NS, ref) is None, timeout=10)
    finally:
        cache.stop()
        informers.stop()


def test_the_webhook_check_and_audit_judge_a_derived_object_alike(
        builtin_engine: EmbeddedEngine) -> None:
    """One Enforcer: the audit (which reviews a controller-owned object as its controller's
    request) and ``decide`` (magtape check) give the admission app's verdict above."""
    from magtape.audit.results import Auditor
    from magtape.remediation import default_catalogue

    deploy = web_deployment()
    rs = replicaset_of(deploy)
    enforcer = Enforcer(EnforcementState(), DenyLevel.LOW, clock=Clock(NOW),
                        inheritance=Inheritance(frozenset(DEFAULT_CONTROLLER_IDENTITIES),
                                                OwnersFrom([deploy])))
    _, decision = enforcer.decide(make_review(rs, NS, username=DEPLOY_CONTROLLER),
                                  builtin_engine.evaluate)
    assert decision.allowed
    assert [f.verdict.value for f in decision.findings] == ["inherited"]
    audited = Auditor(enforcer, builtin_engine.evaluate, default_catalogue()).audit(rs)
    assert [(r.result, r.verdict, r.note) for r in audited.results] == [
        ("warn", "inherited", "[inherited from Deployment legacy/test-deploy02: already failing]")]
    # its owner, audited, would be denied anew; its controllers' objects inherit
    [owner_result] = Auditor(enforcer, builtin_engine.evaluate,
                             default_catalogue()).audit(deploy).results
    assert (owner_result.result, owner_result.running) == ("fail", "inherited")


# ------------------------------------------------------------------ how it was allowed


def _event_note(engine: EmbeddedEngine, obj: dict[str, Any], user: str,
                owners: list[dict[str, Any]], exceptions: tuple[dict[str, Any], ...] = ()
                ) -> tuple[bool, str]:
    from datetime import timedelta

    from magtape.decision import Outcome
    from magtape.notify.events import build_event

    state = EnforcementState(exceptions=[parse_exception(e, max_lifetime=timedelta(days=90))
                                         for e in exceptions])
    enforcer = Enforcer(state, DenyLevel.LOW, clock=Clock(),
                        inheritance=Inheritance(frozenset(DEFAULT_CONTROLLER_IDENTITIES),
                                                OwnersFrom(owners)))
    review = make_review(obj, NS, username=user)
    evaluation, decision = enforcer.decide(review, engine.evaluate)
    event = build_event(Outcome(review, decision, DenyLevel.LOW, evaluation), "magtape-0")
    return decision.allowed, str(event.note)


def test_events_say_how_a_failure_was_allowed(builtin_engine: EmbeddedEngine) -> None:
    deploy = web_deployment()
    legacy = exception("legacy-priv", namespace=NS, kinds=["Deployment"],
                       names=["test-deploy02"])
    allowed, note = _event_note(builtin_engine, deploy, "alice", [], (legacy,))
    assert allowed and note.startswith(
        PRIV.format("app") + " [exempted by MagTapeException legacy/legacy-priv until "
        "2026-12-01T12:00:00Z] | How to fix: MT2001: "), note
    allowed, note = _event_note(builtin_engine, replicaset_of(deploy), DEPLOY_CONTROLLER,
                                [deploy])
    assert allowed and note.startswith(
        PRIV.format("app") + " [inherited from Deployment legacy/test-deploy02: already "
        "failing] | How to fix: MT2001: "), note


def test_an_unreachable_api_server_leaves_objects_judged_on_their_own(
        fake_kube: FakeKube, builtin_engine: EmbeddedEngine) -> None:
    """Until the owners are listed, no owner is found: a controller's object is judged on
    its own (denied here), and admission never waits for the API server."""
    deploy = web_deployment()
    fake_kube.seed(deploy)
    fake_kube.fail(500)
    informers = Informers(RawApi(fake_kube.api_client()),
                          WatchTimings(watch_timeout_seconds=5, backoff_max_seconds=0.2))
    informers.start()
    cache = OwnerIndex(informers, [KindRef("apps/v1", "deployments")],
                       probe_namespace="magtape-system")
    cache.start()
    try:
        fake_kube.wait_for(lambda: fake_kube.requests_matching("GET"), timeout=10)
        assert not cache.synced
        enforcer = Enforcer(EnforcementState(), DenyLevel.LOW, clock=Clock(),
                            inheritance=Inheritance(frozenset(DEFAULT_CONTROLLER_IDENTITIES),
                                                    cache))
        _, decision = enforcer.decide(make_review(replicaset_of(deploy), NS,
                                                  username=DEPLOY_CONTROLLER),
                                      builtin_engine.evaluate)
        assert not decision.allowed
        fake_kube.clear_faults()  # once the API answers, the owner is found
        fake_kube.wait_for(lambda: cache.synced, timeout=10)
    finally:
        cache.stop()
        informers.stop()
