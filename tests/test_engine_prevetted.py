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


def test_a_module_added_to_a_builtin_library_package_means_everything_is_vetted(
        engine: EmbeddedEngine) -> None:
    extra = unique(PolicyModule("configmap magtape-system/extra", "extra.rego",
                                "package magtape.lib.workloads\n\nextra := 1\n"))
    report = engine.load([*builtin_modules(), extra], {})
    assert report.policies == ()
    assert {e.filename for e in report.errors} >= {m.filename for m in builtin_modules()
                                                   if is_policy(m)}


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
