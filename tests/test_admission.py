"""Decisions end to end through the admission app: deny levels, API versions,
dry-run, engine failures, hot reload, and broken policies beside healthy ones.

Uses small purpose-built policies so each case states exactly what fires; the
built-in catalogue is covered by tests/test_policy_samples.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import AppFactory, review_doc
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import modules_from_dirs
from magtape.metrics import Metrics
from magtape.policy import PolicyModule
from notifysupport import label_policy

SEVERITIES = {"LOW": "MT9001", "MED": "MT9002", "HIGH": "MT9003"}


def severity_modules(tag: str = "") -> list[PolicyModule]:
    """One policy per severity; each fails objects labelled ``fail-<severity>``."""
    return [label_policy(f"sev_{s.lower()}", f"sev-{s.lower()}{tag}", s, c, f"fail-{s.lower()}",
                         f"fails sev-{s.lower()}{tag}")
            for s, c in SEVERITIES.items()]


def expected(name: str, *severities: str, tag: str = "") -> list[str]:
    return sorted(f'[FAIL] {s} - fails sev-{s.lower()}{tag} for container "{name}" '
                  f"({SEVERITIES[s]})" for s in severities)


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    e = EmbeddedEngine(timeout_seconds=10, workers=4)
    report = e.load(severity_modules(), {})
    assert len(report.policies) == 3 and not report.errors
    yield e
    e.close()


def pod(name: str = "web", *failing: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "test1",
                         "labels": {f"fail-{s.lower()}": "yes" for s in failing}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


DENY_TABLE = [
    # deny level, failing severities, allowed?
    ("OFF", ("LOW", "MED", "HIGH"), True),
    ("LOW", ("HIGH",), False), ("LOW", ("MED",), True), ("LOW", ("LOW",), True),
    ("MED", ("HIGH",), False), ("MED", ("MED",), False), ("MED", ("LOW",), True),
    ("HIGH", ("HIGH",), False), ("HIGH", ("MED",), False), ("HIGH", ("LOW",), False),
    ("HIGH", (), True), ("LOW", ("LOW", "MED"), True),
]


@pytest.mark.parametrize("level, failing, allowed", DENY_TABLE)
@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_deny_levels(make_client: AppFactory, engine: EmbeddedEngine, level: str,
                     failing: tuple[str, ...], allowed: bool, api_version: str) -> None:
    from magtape.policy import DenyLevel

    client = make_client(engine=engine, deny_level=DenyLevel(level))
    doc = review_doc(pod("web", *failing), api_version=api_version)
    body = client.post("/", json=doc).get_json()
    assert body["apiVersion"] == api_version and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == doc["request"]["uid"]
    assert resp["allowed"] is allowed
    messages = expected("web", *failing)
    if messages:
        assert resp["warnings"] == messages
    else:
        assert "warnings" not in resp
    if allowed:
        assert "status" not in resp
    else:
        assert resp["status"] == {"code": 403, "message": ", ".join(messages)}


def test_dry_run_gets_the_same_decision_and_no_alert(make_client: AppFactory,
                                                     engine: EmbeddedEngine) -> None:
    metrics = Metrics(CollectorRegistry())
    client = make_client(engine=engine, metrics=metrics)
    wet = client.post("/", json=review_doc(pod("web", "HIGH"))).get_json()["response"]
    dry = client.post("/", json=review_doc(pod("web", "HIGH"), dryRun=True)).get_json()["response"]
    assert dry == wet | {"uid": dry["uid"]} and dry["allowed"] is False
    assert metrics.registry.get_sample_value(
        "magtape_admission_requests_total",
        {"namespace": "test1", "decision": "denied", "alert_sent": "false"}) == 2


@pytest.mark.parametrize("policy, allowed", [("Fail", False), ("Ignore", True)])
def test_engine_without_policies_follows_failure_policy(make_client: AppFactory, policy: str,
                                                        allowed: bool) -> None:
    from magtape.settings import EngineSettings, FailurePolicy, Settings

    metrics = Metrics(CollectorRegistry())
    never_loaded = EmbeddedEngine()
    on_failure = Settings(engine=EngineSettings(failure_policy=FailurePolicy(policy)))
    client = make_client(engine=never_loaded, metrics=metrics,
                         settings=on_failure)
    resp = client.post("/", json=review_doc(pod())).get_json()["response"]
    assert resp["allowed"] is allowed
    assert "could not evaluate the policies" in resp["warnings"][0]
    assert "no policy set is loaded" in resp["warnings"][0]
    assert "Contact your cluster administrator" in resp["warnings"][0]
    if not allowed:
        assert resp["status"]["code"] == 403
        assert "could not evaluate the policies" in resp["status"]["message"]
    assert metrics.registry.get_sample_value("magtape_policy_engine_errors_total",
                                             {"reason": "unavailable"}) == 1
    assert client.get("/readyz").status_code == 503
    never_loaded.close()


SLOW_POLICY = """package kubernetes.admission.slow
import rego.v1
policy_metadata := {"name": "slow", "severity": "LOW", "errcode": "MT9100", "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
  input.request.object.metadata.labels.slow
  n := count([x | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000); x * y < 0])
  info := {"msg": sprintf("[FAIL] LOW - %v (MT9100)", [n])}
}
"""


@pytest.mark.parametrize("policy, allowed", [("Fail", False), ("Ignore", True)])
def test_engine_timeout_follows_failure_policy(make_client: AppFactory, policy: str,
                                               allowed: bool) -> None:
    from magtape.settings import EngineSettings, FailurePolicy, Settings

    metrics = Metrics(CollectorRegistry())
    slow = EmbeddedEngine(timeout_seconds=0.3, workers=2)
    slow.load([PolicyModule("slow", "slow.rego", SLOW_POLICY)], {})
    on_failure = Settings(engine=EngineSettings(failure_policy=FailurePolicy(policy)))
    client = make_client(engine=slow, metrics=metrics,
                         settings=on_failure)
    obj = pod()
    obj["metadata"]["labels"] = {"slow": "yes"}
    resp = client.post("/", json=review_doc(obj)).get_json()["response"]
    assert resp["allowed"] is allowed
    assert "timed out after 0.3s" in resp["warnings"][0]
    assert metrics.registry.get_sample_value("magtape_policy_engine_errors_total",
                                             {"reason": "timeout"}) == 1
    slow.close()


def test_broken_policies_are_reported_and_the_others_enforce(tmp_path: Path,
                                                             make_client: AppFactory) -> None:
    for m in severity_modules():
        (tmp_path / Path(m.filename).name).write_text(m.source)
    (tmp_path / "syntax.rego").write_text(
        "package kubernetes.admission.syntax\nimport rego.v1\n\n"
        "deny contains x if { x := input.request == }\n")
    (tmp_path / "nometa.rego").write_text(
        "package kubernetes.admission.nometa\nimport rego.v1\ndeny contains 1 if { false }\n")
    # rego-cpp aborted the process on this one; regorus evaluates it.
    (tmp_path / "with_input.rego").write_text(
        "package kubernetes.admission.with_input\nimport rego.v1\n"
        'policy_metadata := {"name": "with-input", "severity": "HIGH", "errcode": "MT9200", '
        '"targets": {"Pod"}}\n'
        "matches if input.request.kind.kind in policy_metadata.targets\n"
        "deny contains m if { m := upper(input.request.uid); false }\n"
        'weird if { count(deny) == 0 with input as {"request": {"uid": "x"}} }\n')
    (tmp_path / "unknownfn.rego").write_text(
        "package kubernetes.admission.unknownfn\nimport rego.v1\n"
        'policy_metadata := {"name": "unknownfn", "severity": "HIGH", "errcode": "MT9201", '
        '"targets": {"Pod"}}\n'
        "matches if input.request.kind.kind in policy_metadata.targets\n"
        "deny contains m if { m := no_such_function(input.request.uid) }\n")
    engine = EmbeddedEngine()
    report = engine.load(modules_from_dirs([tmp_path]), {})
    assert sorted(p.name for p in report.policies) == ["sev-high", "sev-low", "sev-med",
                                                       "with-input"]
    errors = {Path(e.filename).name: e for e in report.errors}
    assert set(errors) == {"syntax.rego", "nometa.rego", "unknownfn.rego"}
    assert errors["syntax.rego"].line == 4, errors["syntax.rego"]
    assert "policy_metadata is missing" in errors["nometa.rego"].message
    assert "no_such_function" in errors["unknownfn.rego"].message, errors["unknownfn.rego"]
    resp = make_client(engine=engine).post("/", json=review_doc(pod("web", "HIGH"))).get_json()
    assert resp["response"]["allowed"] is False
    engine.close()


def test_hot_reload_under_concurrent_requests(make_client: AppFactory) -> None:
    """Requests during repeated swaps all answer, each from one whole policy set."""
    engine = EmbeddedEngine(workers=4)
    sets = [severity_modules(""), severity_modules("-v2")]
    engine.load(sets[0], {})
    client_lock = threading.Lock()
    clients: dict[int, Any] = {}
    stop = threading.Event()
    answers: list[tuple[int, tuple[str, ...]]] = []

    def hammer(worker: int) -> None:
        with client_lock:
            client = clients.setdefault(worker, make_client(engine=engine))
        while not stop.is_set():
            resp = client.post("/", json=review_doc(pod("web", "LOW", "MED")))
            answers.append((resp.status_code, tuple(resp.get_json()["response"]["warnings"])))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, i) for i in range(4)]
        for i in range(6):
            engine.load(sets[(i + 1) % 2], {})
        stop.set()
        for f in futures:
            f.result()
    old = tuple(expected("web", "LOW", "MED"))
    new = tuple(expected("web", "LOW", "MED", tag="-v2"))
    assert answers and {a for a in answers} <= {(200, old), (200, new)}
    assert engine.load(sets[0], {}).version == 8  # six swaps after the first load
    engine.close()


def test_duplicate_policy_name_is_refused_and_the_rest_enforces(make_client: AppFactory) -> None:
    engine = EmbeddedEngine()
    engine.load(severity_modules(), {})
    duplicate = [*severity_modules(), PolicyModule(
        "dup", "dup.rego", severity_modules()[0].source.replace("sev_low", "sev_low_copy"))]
    report = engine.load(duplicate, {})
    assert any("already used" in e.message for e in report.errors)
    resp = make_client(engine=engine).post("/", json=review_doc(pod("web", "LOW"))).get_json()
    assert resp["response"]["warnings"] == expected("web", "LOW")
    engine.close()
