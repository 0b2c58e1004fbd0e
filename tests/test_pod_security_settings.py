"""MAGTAPE_POD_SECURITY[_VERSION]: parsed once, and the same ``data`` in both engines.

The settings become ``data.magtape.pod_security.default`` (the PSS checks'
contract, magtape.podsecurity); the embedded engine gets it with its base
data, the ``opa`` engine writes it into real OPA before it evaluates, after
OPA lost it, and at health checks. A fixture policy that reads the document
proves both engines see it, and see the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.opa import OpaEngine
from magtape.engine.sources import base_data, opa_documents, policy_modules
from magtape.podsecurity import Level, PodSecurity, posture, with_pod_security
from magtape.policy import PolicyModule
from magtape.review import make_review
from magtape.settings import ConfigError, Settings
from opasupport import OpaServer

# Denies every Pod with the level/version the PSS checks would read.
FIXTURE = """package kubernetes.admission.pss_data_fixture
import rego.v1

policy_metadata := {"name": "pss-data-fixture", "severity": "HIGH", "errcode": "MT3099",
	"targets": {"Pod"}}

matches if input.request.kind.kind == "Pod"

deny contains {"msg": sprintf("[FAIL] HIGH - %s:%s (MT3099)", [d.level, d.version])} if {
	d := data.magtape.pod_security.default
}
"""
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns1"},
       "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def test_defaults_are_off_and_latest() -> None:
    s = Settings.from_env({})
    assert s.pod_security.level is Level.OFF and s.pod_security.version == "latest"
    assert s.pod_security.default is None
    assert "magtape" not in base_data(s)


@pytest.mark.parametrize("level, version, expected", [
    ("restricted", "", {"level": "restricted", "version": "latest"}),
    ("Baseline", "v1.25", {"level": "baseline", "version": "v1.25"}),
    ("restricted", "LATEST", {"level": "restricted", "version": "latest"}),
    ("baseline", "v1.0", {"level": "baseline", "version": "v1.0"}),
])
def test_the_setting_becomes_the_default_document(level: str, version: str,
                                                  expected: dict[str, str]) -> None:
    s = Settings.from_env({"MAGTAPE_POD_SECURITY": level,
                           "MAGTAPE_POD_SECURITY_VERSION": version})
    assert base_data(s)["magtape"]["pod_security"] == {"default": expected}
    assert opa_documents(s) == {"magtape/pod_security": {"default": expected}}


@pytest.mark.parametrize("name, value, accepted", [
    ("MAGTAPE_POD_SECURITY", "privileged", "off, baseline, restricted"),
    ("MAGTAPE_POD_SECURITY", "strict", "off, baseline, restricted"),
    ("MAGTAPE_POD_SECURITY_VERSION", "1.25", "v1.N (v1.0, v1.25, ...) or latest"),
    ("MAGTAPE_POD_SECURITY_VERSION", "v2.0", "v1.N"),
    ("MAGTAPE_POD_SECURITY_VERSION", "v1.025", "v1.N"),
])
def test_bad_values_name_variable_value_and_accepted(name: str, value: str,
                                                     accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and accepted in message


def test_override_sits_beside_the_default_and_data_files_keep_theirs() -> None:
    data = {"magtape": {"pod_security": {"default": {"level": "baseline", "version": "v1.0"}},
                        "other": 1}}
    out = with_pod_security(data, None, PodSecurity(Level.RESTRICTED, "v1.30"))
    assert out["magtape"] == {"other": 1, "pod_security": {
        "default": {"level": "baseline", "version": "v1.0"},
        "override": {"level": "restricted", "version": "v1.30"}}}
    assert data["magtape"]["pod_security"] == {  # the input is never mutated
        "default": {"level": "baseline", "version": "v1.0"}}


@pytest.mark.parametrize("raw, expected", [
    ("restricted", PodSecurity(Level.RESTRICTED, "latest")),
    ("baseline:v1.23", PodSecurity(Level.BASELINE, "v1.23")),
    ("privileged:latest", PodSecurity(Level.PRIVILEGED, "latest")),
])
def test_level_and_version_text(raw: str, expected: PodSecurity) -> None:
    assert PodSecurity.parse(raw) == expected


@pytest.mark.parametrize("raw", ["", "off", "restricted:x", "restricted:1.2", "x:v1.2"])
def test_bad_level_text(raw: str) -> None:
    with pytest.raises(ValueError):
        PodSecurity.parse(raw)


def test_namespace_posture_reads_magtape_and_psa_labels() -> None:
    mine = posture({"k8s.t-mobile.com/pod-security": "restricted",
                    "k8s.t-mobile.com/pod-security-version": "v1.29"})
    assert mine.magtape == PodSecurity(Level.RESTRICTED, "v1.29") and not mine.candidate
    psa = posture({"pod-security.kubernetes.io/enforce": "baseline",
                   "pod-security.kubernetes.io/warn": "restricted"})
    assert psa.magtape is None and psa.candidate
    assert psa.psa == {"enforce": "baseline", "warn": "restricted"}
    # As the checks read it: a typo is restricted, a bad version latest.
    bad = posture({"k8s.t-mobile.com/pod-security": "strict",
                   "k8s.t-mobile.com/pod-security-version": "1.29"})
    assert bad.magtape == PodSecurity(Level.RESTRICTED, "latest") and not bad.candidate
    assert bad.invalid == ("k8s.t-mobile.com/pod-security=strict, "
                           "k8s.t-mobile.com/pod-security-version=1.29")
    # No version label: the cluster default's version.
    assert posture({"k8s.t-mobile.com/pod-security": "baseline"},
                   PodSecurity(Level.RESTRICTED, "v1.25")).magtape == \
        PodSecurity(Level.BASELINE, "v1.25")


# ------------------------------------------------------------------ both engines
@pytest.fixture
def data_fixture(opa_server: OpaServer) -> Iterator[OpaServer]:
    opa_server.put_policy("pss_data_fixture", FIXTURE)
    yield opa_server
    opa_server.delete_policy("pss_data_fixture")
    opa_server.session.delete(f"{opa_server.url}/v1/data/magtape/pod_security", timeout=30)


def _messages(engine: Any) -> list[str]:
    evaluation = engine.evaluate(make_review(POD, "ns1"))
    return sorted(v.msg for v in evaluation.violations if v.errcode == "MT3099")


def test_both_engines_see_the_same_default(data_fixture: OpaServer) -> None:
    settings = Settings.from_env({"MAGTAPE_POD_SECURITY": "restricted",
                                  "MAGTAPE_POD_SECURITY_VERSION": "v1.29"})
    opa = OpaEngine(data_fixture.url, timeout_seconds=10, documents=opa_documents(settings))
    embedded = EmbeddedEngine(timeout_seconds=10, workers=1)
    try:
        modules = [*policy_modules(()),
                   PolicyModule("fixture", "pss_data_fixture.rego", FIXTURE)]
        assert not embedded.load(modules, base_data(settings)).errors
        expected = ["[FAIL] HIGH - restricted:v1.29 (MT3099)"]
        assert _messages(embedded) == expected
        assert _messages(opa) == expected
        # OPA restarted (the document is gone): the next health check writes it again.
        data_fixture.session.delete(f"{data_fixture.url}/v1/data/magtape/pod_security",
                                    timeout=30)
        assert _messages(opa) == []  # no failed contact: the engine could not know yet
        opa._healthy_until = 0.0  # the health check's TTL has passed
        assert opa.ready
        assert _messages(opa) == expected
    finally:
        embedded.close()


def test_off_writes_an_empty_document_to_opa(data_fixture: OpaServer) -> None:
    data_fixture.put_data("magtape/pod_security", {"default": {"level": "restricted",
                                                               "version": "latest"}})
    opa = OpaEngine(data_fixture.url, timeout_seconds=10,
                    documents=opa_documents(Settings.from_env({})))
    assert _messages(opa) == []  # a stale default from an earlier start is cleared
