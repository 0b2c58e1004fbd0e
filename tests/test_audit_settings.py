"""The audit's settings and kinds: defaults, bad values named, unserved resources skipped."""

from __future__ import annotations

import pytest

from fakekube import FakeKube
from magtape.audit.kinds import DEFAULT_KINDS, audit_kinds, owned_by_audited, served
from magtape.kube.rest import RawApi, ResourceRef
from magtape.settings import AuditMode, AuditScope, ConfigError, KindRef, Settings


def test_the_audit_is_off_by_default_and_parsed_from_the_environment() -> None:
    assert Settings.from_env({}).audit.mode is AuditMode.OFF
    s = Settings.from_env({"MAGTAPE_AUDIT": "ON", "MAGTAPE_AUDIT_NAMESPACES": "all",
                           "MAGTAPE_AUDIT_KINDS": "apps/v1/deployments,v1/pods",
                           "MAGTAPE_AUDIT_RATE": "2.5", "MAGTAPE_AUDIT_MAX_RESULTS": "50"})
    assert (s.audit.mode, s.audit.namespaces, s.audit.rate, s.audit.max_results) == (
        AuditMode.ON, AuditScope.ALL, 2.5, 50)
    assert audit_kinds(s.audit.kinds) == [ResourceRef("apps/v1", "deployments"),
                                          ResourceRef("v1", "pods")]


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("MAGTAPE_AUDIT", "maybe", "off, on"),
    ("MAGTAPE_AUDIT_NAMESPACES", "some", "opted-in, all"),
    ("MAGTAPE_AUDIT_RATE", "0", "a number from 0.1 to 10,000"),
    ("MAGTAPE_AUDIT_RATE", "inf", "a number from 0.1 to 10,000"),
    ("MAGTAPE_AUDIT_KINDS", "v1/secrets", "VERSION/PLURAL"),
])
def test_a_bad_value_names_the_variable_and_what_is_accepted(name: str, value: str,
                                                              accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and accepted in str(caught.value)


def test_namespaces_cannot_be_audited_and_the_default_covers_the_policies_kinds() -> None:
    with pytest.raises(ConfigError, match="MAGTAPE_AUDIT_KINDS"):
        audit_kinds([KindRef("v1", "namespaces")])
    plurals = {ref.plural for ref in audit_kinds(())}
    assert len(plurals) == len(DEFAULT_KINDS)
    assert {"pods", "services", "deployments", "poddisruptionbudgets"} <= plurals


def test_resources_the_server_does_not_serve_are_skipped(fake_kube: FakeKube) -> None:
    api = RawApi(fake_kube.api_client())
    refs = audit_kinds(())
    kept = served(api, refs, "magtape-system")
    # The fake serves pods, services and deployments of the default kinds.
    assert {r.plural for r in kept} == {"pods", "services", "deployments"}


def test_objects_whose_controller_is_audited_are_left_to_it() -> None:
    owned = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "controller": True}]}}
    assert owned_by_audited(owned, frozenset({"ReplicaSet"}))
    assert not owned_by_audited(owned, frozenset({"Deployment"}))
    not_controller = {"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}
    assert not owned_by_audited(not_controller, frozenset({"ReplicaSet"}))
