"""Which policies regorus' compiled mode decides, and what happens beside it.

The built-in policies run compiled (tests/test_differential.py proves them
against OPA in that mode); every other module runs interpreted, in the same
request, and anything that could change what a built-in means (a module in a
built-in library package, an edited built-in) takes the built-ins back to the
interpreter too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from conftest import REPO, load_objects
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.policy import Evaluation, PolicyModule
from magtape.review import make_review
from magtape.settings import Settings
from magtape.wiring import build_engine

DEPLOYMENT = load_objects(REPO / "testing/deployments/test-deploy02.yaml")[0]
BUILTIN_ERRCODES = ["MT1001", "MT1002", "MT1003", "MT1004", "MT2001"]

CUSTOM = PolicyModule("configmap magtape-system/custom", "custom.rego", """
package kubernetes.admission.custom_fixture

import rego.v1

import data.magtape.lib.workloads

policy_metadata := {"name": "custom-fixture", "severity": "LOW", "errcode": "MT0010",
	"targets": {"Deployment"}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains {"name": "custom-fixture", "severity": "LOW", "errcode": "MT0010",
	"msg": sprintf("[FAIL] LOW - %d containers (MT0010)", [count(workloads.containers)])}
""")

# Fails at runtime on a Deployment with a non-numeric app label (OPA: undefined;
# regorus: an error), but not on the minimal object vetting runs it on.
FAILING = PolicyModule("configmap magtape-system/failing", "failing.rego", """
package kubernetes.admission.failing_fixture

import rego.v1

policy_metadata := {"name": "failing-fixture", "severity": "LOW", "errcode": "MT0011",
	"targets": {"Deployment"}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains {"name": "failing-fixture", "severity": "LOW", "errcode": "MT0011",
	"msg": format_int(to_number(input.request.object.spec.template.metadata.labels.app), 10)}
""")

# A rule added to a built-in library package: it could change what the
# built-ins mean, so they are no longer the modules that were proven.
LIBRARY_EXTENSION = PolicyModule("configmap magtape-system/lib", "workloads_extra.rego", """
package magtape.lib.workloads

import rego.v1

extra := 1
""")


Load = Callable[..., EmbeddedEngine]


@pytest.fixture
def load() -> Iterator[Load]:
    """``load(*extra, compiled=True, base=builtins)``: an engine with that set."""
    engines: list[EmbeddedEngine] = []

    def load(*extra: PolicyModule, compiled: bool = True,
             base: Sequence[PolicyModule] = ()) -> EmbeddedEngine:
        engine = EmbeddedEngine(timeout_seconds=10, workers=1, compiled=compiled)
        engines.append(engine)
        report = engine.load([*(base or builtin_modules()), *extra], {})
        assert not report.errors, report.errors
        return engine

    yield load
    for engine in engines:
        engine.close()


def evaluate(engine: EmbeddedEngine) -> Evaluation:
    return engine.evaluate(make_review(DEPLOYMENT, "test1"))


def errcodes(evaluation: Evaluation) -> list[str]:
    return sorted(v.errcode for v in evaluation.violations)


def test_the_builtins_run_compiled(load: Load) -> None:
    evaluation = evaluate(load())
    assert evaluation.compiled
    assert errcodes(evaluation) == BUILTIN_ERRCODES


def test_compiled_mode_can_be_turned_off(load: Load) -> None:
    evaluation = evaluate(load(compiled=False))
    assert not evaluation.compiled
    assert errcodes(evaluation) == BUILTIN_ERRCODES


@pytest.mark.parametrize("raw, compiled", [(None, True), ("false", False)])
def test_the_setting_reaches_the_served_engine(raw: str | None, compiled: bool) -> None:
    settings = Settings.from_env({"MAGTAPE_ENGINE_COMPILED": raw} if raw else {})
    engine = build_engine(settings)
    assert isinstance(engine, EmbeddedEngine)
    try:
        engine.load(builtin_modules(), {})
        assert evaluate(engine).compiled is compiled
    finally:
        engine.close()


def test_a_custom_policy_is_interpreted_beside_them(load: Load) -> None:
    evaluation = evaluate(load(CUSTOM))
    assert evaluation.compiled  # the built-ins' part
    assert errcodes(evaluation) == sorted([*BUILTIN_ERRCODES, "MT0010"])
    assert "[FAIL] LOW - 1 containers (MT0010)" in {v.msg for v in evaluation.violations}


def test_a_failing_custom_policy_is_pinned_and_the_builtins_still_decide(load: Load) -> None:
    evaluation = evaluate(load(CUSTOM, FAILING))
    assert [e.policy for e in evaluation.policy_errors] == ["failing-fixture"]
    assert errcodes(evaluation) == sorted([*BUILTIN_ERRCODES, "MT0010"])


def test_a_module_of_another_origin_in_a_builtin_library_package_is_left_out() -> None:
    """It would change what the built-ins mean (policyset.group_modules): refused at
    load, so the built-ins keep their compiled mode."""
    engine = EmbeddedEngine(timeout_seconds=10, workers=1)
    try:
        (error,) = engine.load([*builtin_modules(), LIBRARY_EXTENSION], {}).errors
        assert error.origin == LIBRARY_EXTENSION.origin and "belongs to" in error.message
        evaluation = evaluate(engine)
    finally:
        engine.close()
    assert evaluation.compiled
    assert errcodes(evaluation) == BUILTIN_ERRCODES


def test_an_edited_builtin_policy_is_interpreted(load: Load) -> None:
    edited = [m if not m.filename.endswith("privileged-pod/policy.rego")
              else PolicyModule(m.origin, m.filename, m.source + "\n# edited\n")
              for m in builtin_modules()]
    evaluation = evaluate(load(base=edited))
    assert evaluation.compiled  # the other built-ins
    assert errcodes(evaluation) == BUILTIN_ERRCODES  # MT2001 from the interpreter
