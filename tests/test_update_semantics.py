"""UPDATE semantics through the admission app: pre-existing failures warn, new ones deny.

The finalizer-removal UPDATE of a privileged Pod that predates the namespace's
opt-in must pass (else the Pod is stuck in Terminating), while an UPDATE that
adds a privileged container must still be denied. Requests are the
AdmissionReviews the API server sends (object and oldObject).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from enforcementsupport import client_for, container, deployment, pod, with_finalizers
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.overrides import parse_config
from magtape.enforcement.updates import metadata_only, update_review
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import DenyLevel
from magtape.review import make_review

PRIV_MSG = '[FAIL] HIGH - Found privileged Security Context for container "{}" (MT2001)'


def update_doc(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(update_review(old, new, new["metadata"]["namespace"]).raw)
    return doc


def admit(engine: EmbeddedEngine, doc: dict[str, Any], config: str = "",
          level: DenyLevel = DenyLevel.LOW) -> dict[str, Any]:
    state = EnforcementState(parse_config(config))
    client = client_for(engine, Enforcer(state, level))
    response: dict[str, Any] = client.post("/", json=doc).get_json()["response"]
    return response


@pytest.mark.parametrize("config", ["", "allowExistingViolations: false"])
def test_finalizer_removal_of_an_existing_privileged_pod_is_allowed_with_a_warning(
        builtin_engine: EmbeddedEngine, config: str) -> None:
    old = with_finalizers(pod("legacy", container("app", privileged=True)), "example.com/stop")
    new = with_finalizers(old)  # finalizers: []
    resp = admit(builtin_engine, update_doc(old, new), config)
    assert resp["allowed"] is True
    assert resp["warnings"] == [PRIV_MSG.format("app")
                                + " [already failing before this update: allowed]"]


def test_the_same_pod_created_anew_is_denied(builtin_engine: EmbeddedEngine) -> None:
    obj = pod("legacy", container("app", privileged=True))
    doc = json.loads(make_review(obj, "team-a").raw)
    resp = admit(builtin_engine, doc)
    assert resp["allowed"] is False
    assert resp["status"]["message"] == PRIV_MSG.format("app")  # the original message, exactly


def test_an_update_adding_a_privileged_container_is_denied(builtin_engine: EmbeddedEngine) -> None:
    old = deployment("web", container("app"))
    new = deployment("web", container("app"), container("debug", privileged=True))
    resp = admit(builtin_engine, update_doc(old, new))
    assert resp["allowed"] is False
    assert resp["status"]["message"] == PRIV_MSG.format("debug")


def test_a_new_failure_denies_while_the_pre_existing_one_only_warns(
        builtin_engine: EmbeddedEngine) -> None:
    old = deployment("web", container("app", privileged=True))
    new = deployment("web", container("app", privileged=True),
                     container("debug", privileged=True))
    resp = admit(builtin_engine, update_doc(old, new))
    assert resp["allowed"] is False
    assert resp["warnings"] == [
        PRIV_MSG.format("app") + " [already failing before this update: allowed]",
        PRIV_MSG.format("debug")]


@pytest.mark.parametrize("config, allowed", [("", True),
                                             ("allowExistingViolations: false", False)])
def test_allow_existing_violations_governs_spec_changes(builtin_engine: EmbeddedEngine, config: str,
                                                        allowed: bool) -> None:
    old = deployment("web", container("app", privileged=True))
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5  # a spec change that leaves the failure as it was
    resp = admit(builtin_engine, update_doc(old, new), config)
    assert resp["allowed"] is allowed


def test_metadata_only_changes_keep_pre_existing_failures_allowed_when_the_setting_is_off(
        builtin_engine: EmbeddedEngine) -> None:
    old = deployment("web", container("app", privileged=True))
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["team"] = "a"
    new["metadata"]["annotations"] = {"note": "x"}
    new["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                           "name": "owner", "uid": "1"}]
    new["status"] = {"replicas": 2}
    assert metadata_only(old, new)
    resp = admit(builtin_engine, update_doc(old, new), "allowExistingViolations: false")
    assert resp["allowed"] is True


def test_a_changed_message_is_a_new_failure(builtin_engine: EmbeddedEngine) -> None:
    # Renaming the privileged container changes the message: not "the same" failure.
    old = deployment("web", container("app", privileged=True))
    new = deployment("web", container("app2", privileged=True))
    assert admit(builtin_engine, update_doc(old, new))["allowed"] is False


def test_deletion_is_never_denied_through_the_webhook(builtin_engine: EmbeddedEngine) -> None:
    old = pod("legacy", container("app", privileged=True))
    doc = json.loads(make_review(old, "team-a", operation="DELETE").raw)
    doc["request"]["oldObject"], doc["request"]["object"] = old, None
    resp = admit(builtin_engine, doc, level=DenyLevel.HIGH)
    assert resp == {"uid": doc["request"]["uid"], "allowed": True}
