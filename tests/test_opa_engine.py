"""The `opa` engine against real OPA (`opa run --server`, tests/opasupport.py).

OPA holds the built-in policies and the OPA entrypoint
(``data.magtape.main.decisions``, policies/lib/main.rego), pushed over its
REST policy API as kube-mgmt would. The engine must reach MagTape's own
engine's decisions on every testing/ manifest (tests/test_differential.py
compares far more objects, straight through the entrypoint), turn OPA's
failures into EngineErrors with the right reason, and follow the failure
policy when OPA is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from conftest import REPO, AppFactory, load_objects, review_doc
from magtape import runtime
from magtape.engine import EngineError
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.opa import OpaEngine
from magtape.engine.policyset import package_of
from magtape.engine.sources import builtin_modules
from magtape.metrics import POLICIES_LOADED, Metrics
from magtape.review import make_review
from magtape.settings import EngineSettings, FailurePolicy, Settings
from opasupport import OpaServer

MANIFESTS = sorted(p for p in (REPO / "testing").rglob("*.yaml")
                   if p.name != "functional-tests.yaml" and "namespaces" not in p.parts)

# A policy that OPA cannot evaluate: a complete rule with two values is an
# eval_conflict_error (HTTP 500) for every request of its kind.
CONFLICT_POLICY = """package kubernetes.admission.magtape_conflict_fixture
import rego.v1

policy_metadata := {"name": "conflict-fixture", "severity": "LOW", "errcode": "MT0001",
	"targets": {"MagTapeConflict"}}

matches if input.request.kind.kind == "MagTapeConflict"

deny contains {"msg": "[FAIL] LOW - conflict (MT0001)"} if {
	matches
	verdict
}

verdict := x if some x in [true, false]
"""

# A policy that keeps OPA busy for far longer than the engine's deadline,
# without memory: nine million comparisons, only for its made-up kind.
SLOW_POLICY = """package kubernetes.admission.magtape_slow_fixture
import rego.v1

policy_metadata := {"name": "slow-fixture", "severity": "LOW", "errcode": "MT0002",
	"targets": {"MagTapeSlow"}}

matches if input.request.kind.kind == "MagTapeSlow"

deny contains {"msg": "[FAIL] LOW - slow (MT0002)"} if {
	matches
	every i in numbers.range(1, 3000) {
		every j in numbers.range(1, 3000) {
			i + j > 0
		}
	}
	false
}
"""


@pytest.fixture
def fixture_policy(opa_server: OpaServer, request: pytest.FixtureRequest) -> Iterator[None]:
    """Load request.param (an id, a source) for one test, then take it out again."""
    policy_id, source = request.param
    opa_server.put_policy(policy_id, source)
    yield
    opa_server.delete_policy(policy_id)


def _review_of(kind: str) -> Any:
    return make_review({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}}, "test1")


def test_every_testing_manifest_gets_the_embedded_engines_decision(
        opa_server: OpaServer, builtin_engine: EmbeddedEngine) -> None:
    engine = OpaEngine(opa_server.url, timeout_seconds=10)
    assert engine.ready
    compared = failing = 0
    for path in MANIFESTS:
        for obj in load_objects(path):
            review = make_review(obj, "test1")
            opa = engine.evaluate(review)
            assert opa.policy_errors == ()
            assert opa.violations == builtin_engine.evaluate(review).violations, path
            compared += 1
            failing += bool(opa.violations)
    assert compared >= 10 and failing >= 5  # the comparison saw real failures


def test_only_applicable_policies_are_answered(opa_server: OpaServer) -> None:
    # A ClusterIP Service is a target of node-port-range, whose `matches`
    # (NodePort or LoadBalancer) is false: only port-name-mismatch applies.
    engine = OpaEngine(opa_server.url, timeout_seconds=10)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 443}]}}
    evaluation = engine.evaluate(make_review(service, "test1"))
    assert [r.policy for r in evaluation.results] == ["port-name-mismatch"]
    assert [v.errcode for v in evaluation.violations] == ["MT1006"]
    # A kind no policy targets: nothing applies.
    assert engine.evaluate(_review_of("ConfigMap")).results == ()


@pytest.mark.parametrize("fixture_policy", [("magtape-test/conflict", CONFLICT_POLICY)],
                         indirect=True)
@pytest.mark.usefixtures("fixture_policy")
def test_an_opa_evaluation_error_is_an_engine_error(opa_server: OpaServer) -> None:
    engine = OpaEngine(opa_server.url, timeout_seconds=10)
    with pytest.raises(EngineError, match="OPA answered HTTP 500: error") as exc:
        engine.evaluate(_review_of("MagTapeConflict"))
    assert exc.value.reason == "error"
    # The other kinds are still answered.
    assert engine.evaluate(_review_of("Pod")).results


def test_opa_without_the_entrypoint_says_what_to_load() -> None:
    empty = OpaServer()  # real OPA, nothing loaded
    try:
        with pytest.raises(EngineError, match=r"OPA has no data\.magtape\.main\.decisions"):
            OpaEngine(empty.url, timeout_seconds=10).evaluate(_review_of("Pod"))
    finally:
        empty.stop()


@pytest.mark.parametrize("fixture_policy", [("magtape-test/slow", SLOW_POLICY)], indirect=True)
@pytest.mark.usefixtures("fixture_policy")
def test_opa_timeout_is_an_engine_error(opa_server: OpaServer) -> None:
    with pytest.raises(EngineError, match="unreachable: ReadTimeout") as exc:
        OpaEngine(opa_server.url, timeout_seconds=0.2).evaluate(_review_of("MagTapeSlow"))
    assert exc.value.reason == "timeout"
    # OPA drops the evaluation with the connection and answers the next request.
    assert OpaEngine(opa_server.url, timeout_seconds=10).evaluate(_review_of("Pod")).results


def test_unreachable_opa_is_unavailable() -> None:
    gone = OpaEngine("http://127.0.0.1:9", timeout_seconds=1)
    assert gone.ready is False
    with pytest.raises(EngineError, match="unreachable: ConnectionError") as exc:
        gone.evaluate(make_review(_deployment()))
    assert exc.value.reason == "unavailable"


def test_policies_reach_opa_as_kube_mgmt_pushes_them(opa_server: OpaServer) -> None:
    # What the fixture loaded is what OPA lists: the library and every policy.
    listed = requests.get(f"{opa_server.url}/v1/policies", timeout=10).json()["result"]
    ids = {p["id"] for p in listed}
    assert "magtape-system/lib/main.rego" in ids
    assert {i.split("/")[1] for i in ids} >= {"lib", "pdb", "liveness-probe", "node-port-range"}


def test_policies_loaded_counts_the_policies_opa_holds(opa_server: OpaServer) -> None:
    """kube-mgmt loads OPA's policies, so the gauge asks OPA: a healthy OPA-sidecar
    install must not read 0 (MagTapeNoPoliciesLoaded, critical), a gone OPA must."""
    expected = sum((package_of(m.source) or "").startswith("kubernetes.admission.")
                   for m in builtin_modules())
    for url, count in ((opa_server.url, expected), ("http://127.0.0.1:9", 0)):
        metrics = Metrics(CollectorRegistry())
        runtime.start(Settings(), OpaEngine(url, timeout_seconds=1), None, metrics)
        assert metrics.registry.get_sample_value(POLICIES_LOADED) == count, url
    assert expected >= 30  # the original twelve and the Pod Security Standards


@pytest.mark.parametrize("policy, allowed", [("Fail", False), ("Ignore", True)])
def test_opa_down_follows_the_failure_policy(make_client: AppFactory, policy: str,
                                             allowed: bool) -> None:
    on_failure = Settings(engine=EngineSettings(failure_policy=FailurePolicy(policy)))
    client = make_client(engine=OpaEngine("http://127.0.0.1:9", timeout_seconds=1),
                         settings=on_failure)
    resp = client.post("/", json=review_doc(_deployment())).get_json()["response"]
    assert resp["allowed"] is allowed and "OPA" in resp["warnings"][0]


def _deployment() -> dict[str, Any]:
    (obj,) = load_objects(Path(REPO / "testing/deployments/test-deploy02.yaml"))
    return dict(obj)
