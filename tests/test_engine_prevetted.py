"""The built-in policies' vetting record (magtape.engine.vet, hack/vet_builtins.py).

A set made only of built-in modules loads without a vetting child; anything
else in it is vetted as before. Vetting's deadline is made too short for any
child to answer (1 ms), so a module the record covers loads and any module
that goes to a child is reported: what is trusted shows in the load report.
That the record says what vetting says now is ``make check-generated``'s job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from magtape.engine import vet
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.policy import PolicyModule

NO_TIME_TO_VET = 0.001


@pytest.fixture
def engine() -> Iterator[EmbeddedEngine]:
    e = EmbeddedEngine(workers=1, vet_timeout_seconds=NO_TIME_TO_VET)
    yield e
    e.close()


def unique(module: PolicyModule) -> PolicyModule:
    """The same Rego with a comment no cache has seen: no longer a built-in module."""
    return replace(module, source=f"{module.source}\n# {uuid.uuid4()}\n")


def is_policy(m: PolicyModule) -> bool:
    return "/lib/" not in m.filename


def test_the_builtin_set_is_not_vetted_again(engine: EmbeddedEngine) -> None:
    report = engine.load(builtin_modules(), {})
    assert report.errors == ()
    assert len(report.policies) == len(vet.builtin_verdicts().policies)  # type: ignore[union-attr]


def test_an_edited_builtin_policy_is_vetted_and_the_others_are_not(
        engine: EmbeddedEngine) -> None:
    modules = builtin_modules()
    edited = next(m for m in modules if m.filename.endswith("liveness-probe/policy.rego"))
    report = engine.load([unique(m) if m is edited else m for m in modules], {})
    # The edited policy went to a child, and so did the set it is part of (run
    # together); no other policy did.
    policy_error, set_error = report.errors
    assert policy_error.filename == edited.filename
    assert "did not finish within" in policy_error.message
    assert set_error.origin == "policy set"


@pytest.mark.parametrize("package", [
    "magtape.lib.workloads",  # a built-in library every workload and PSS check uses
    "kubernetes.admission.privileged_pod",  # a built-in policy (MT2001)
])
def test_a_module_of_another_origin_in_a_builtin_package_is_left_out(
        engine: EmbeddedEngine, package: str) -> None:
    """Rego merges a package's modules: a ConfigMap declaring a shipped package
    would rewrite it (all workload checks failed to load, or MT2001 was replaced,
    while the culprit loaded "ok"). It is refused; the built-ins load as shipped."""
    extra = PolicyModule("configmap magtape-system/team-lib", "team.rego",
                         f"package {package}\nimport rego.v1\n\nkind := \"Nope\"\n"
                         'policy_metadata := {"name": "mine", "severity": "LOW", '
                         '"errcode": "MT9999", "targets": {"Pod"}}\n')
    report = engine.load([*builtin_modules(), extra], {})
    (error,) = report.errors
    assert error.origin == "configmap magtape-system/team-lib"
    assert f"package {package} belongs to " in error.message
    assert len(report.policies) == len(vet.builtin_verdicts().policies)  # type: ignore[union-attr]
    assert "privileged-pod" in {p.name for p in report.policies}


def test_the_record_counts_only_for_the_engine_release_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = vet.builtin_verdicts()
    assert recorded is not None and recorded.engine == vet.engine_release()
    other = tmp_path / "builtin_vetted.json"
    other.write_text(replace(recorded, engine="gordon-to-regorus 0.0.1").to_json(),
                     encoding="utf-8")
    monkeypatch.setattr(vet, "BUILTIN_VETTED", other)
    vet.builtin_verdicts.cache_clear()
    try:
        assert vet.builtin_verdicts() is None
    finally:
        vet.builtin_verdicts.cache_clear()
