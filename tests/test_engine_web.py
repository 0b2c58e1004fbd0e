"""Hostile requests and broken policies through the real webhook (waitress, workers).

One server runs the built-in policies plus three custom ones (a catastrophic
regex, a policy that fails at run time on some input, one with malformed
output) under ``MAGTAPE_ENGINE_FAILURE_POLICY=Fail``. Each test checks the
answer and that the server keeps serving ordinary requests afterwards.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from conftest import REPO, review_doc
from magtape.server import Webhook, start
from magtape.settings import (
    Address,
    EngineSettings,
    FailurePolicy,
    HttpSettings,
    NotifySettings,
    Settings,
)

CUSTOM = {
    "regex.rego": """package kubernetes.admission.annotation_regex
import rego.v1
policy_metadata := {"name": "annotation-regex", "severity": "LOW", "errcode": "MT9401",
  "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": "[FAIL] LOW - only a's (MT9401)"} if {
  value := object.get(input.request.object.metadata, ["annotations", "pattern"], "")
  is_string(value)
  regex.match("^(a+)+$", value)
}
""",
    "to_number.rego": """package kubernetes.admission.to_number
import rego.v1
policy_metadata := {"name": "to-number", "severity": "LOW", "errcode": "MT9402",
  "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": "[FAIL] LOW - too many (MT9402)"} if {
  to_number(input.request.object.metadata.labels.n) > 10
}
""",
    "malformed.rego": """package kubernetes.admission.malformed
import rego.v1
policy_metadata := {"name": "malformed", "severity": "HIGH", "errcode": "MT9403",
  "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": "[FAIL] HIGH - lowered", "severity": "LOW"} if {
  input.request.object.metadata.labels.malformed == "yes"
}
""",
}


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    policies = tmp_path_factory.mktemp("policies")
    shutil.copytree(REPO / "policies", policies, dirs_exist_ok=True)
    for name, source in CUSTOM.items():
        (policies / "custom" / name).parent.mkdir(exist_ok=True)
        (policies / "custom" / name).write_text(source)
    free = Address("127.0.0.1", 0)
    settings = Settings(http=HttpSettings(listen=free, metrics_listen=free),
                        engine=EngineSettings(policy_dirs=(str(policies),), workers=2,
                                              timeout_seconds=2.0,
                                              failure_policy=FailurePolicy.FAIL),
                        notify=NotifySettings(events_enabled=False))
    webhook = start(settings)
    yield webhook
    webhook.stop()


def post(hook: Webhook, doc: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", hook.admission_port, timeout=30)
    try:
        conn.request("POST", "/", json.dumps(doc), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:300]
        answer: dict[str, Any] = json.loads(resp.read())["response"]
        return answer
    finally:
        conn.close()


def get(hook: Webhook, path: str, port: int | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port or hook.admission_port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "test1"},
           "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]}}


def assert_still_serving(hook: Webhook) -> None:
    assert post(hook, review_doc(SERVICE))["allowed"] is True
    assert get(hook, "/readyz")[0] == 200


def pod(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "test1", **meta},
            "spec": {"containers": [{
                "name": "c", "image": "nginx",
                "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                              "requests": {"cpu": "1", "memory": "1Gi"}}}]}}


def test_a_30kb_pdb_number_is_answered(hook: Webhook) -> None:
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "pdb", "namespace": "test1"},
           "spec": {"minAvailable": "0" * 29998 + "50%",
                    "selector": {"matchLabels": {"app": "web"}}}}
    answer = post(hook, review_doc(pdb))
    assert answer["uid"] and isinstance(answer["allowed"], bool)
    assert not any("could not evaluate" in w for w in answer.get("warnings", []))
    assert_still_serving(hook)


@pytest.mark.parametrize("value, fails", [("a" * 40000 + "!", False), ("a" * 40000, True)])
def test_a_catastrophic_regex_on_40kb_is_answered(hook: Webhook, value: str,
                                                  fails: bool) -> None:
    answer = post(hook, review_doc(pod(annotations={"pattern": value})))
    assert ("[FAIL] LOW - only a's (MT9401)" in answer.get("warnings", [])) is fails
    assert answer["allowed"] is True
    assert_still_serving(hook)


def test_a_runtime_error_is_reported_and_the_other_violations_stand(hook: Webhook) -> None:
    obj = pod(labels={"n": "many"})
    obj["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    answer = post(hook, review_doc(obj))
    warnings = answer["warnings"]
    assert any("MT2001" in w for w in warnings), warnings  # privileged: still decided
    (error,) = [w for w in warnings if "could not evaluate policy" in w]
    assert "'to-number' (MT9402)" in error and "could not parse string as number" in error
    assert answer["allowed"] is False  # MT2001 is HIGH
    _, metrics = get(hook, "/metrics", hook.metrics_port)
    assert ('magtape_policy_evaluations_total{namespace="test1",policy="to-number",'
            'result="error"} 1.0') in metrics
    # Where it does not fail, the policy decides as usual.
    assert "[FAIL] LOW - too many (MT9402)" in post(hook, review_doc(pod(labels={"n": "11"})))[
        "warnings"]


def test_an_erroring_policy_follows_the_failure_policy_at_its_severity(hook: Webhook) -> None:
    """A HIGH policy with malformed output under Fail denies; its message is not trusted."""
    answer = post(hook, review_doc(pod(labels={"malformed": "yes"})))
    assert answer["allowed"] is False
    assert "could not evaluate policy 'malformed' (MT9403)" in answer["status"]["message"]
    assert "claims severity 'LOW'" in answer["status"]["message"]


def big_deployment(containers: int) -> dict[str, Any]:
    base = yaml.safe_load((REPO / "testing" / "deployments" / "test-deploy02.yaml").read_text())
    template = base["spec"]["template"]["spec"]["containers"][0]
    base["spec"]["template"]["spec"]["containers"] = [
        dict(template, name=f"c{i}") for i in range(containers)]
    return base


def test_huge_deployments_do_not_delay_an_ordinary_review(hook: Webhook) -> None:
    body = json.dumps(review_doc(big_deployment(2000)))
    sent = threading.Barrier(5)
    answers: list[dict[str, Any]] = []

    def send_big() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", hook.admission_port, timeout=60)
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json"})
            sent.wait()
            answers.append(json.loads(conn.getresponse().read())["response"])
        finally:
            conn.close()

    threads = [threading.Thread(target=send_big) for _ in range(4)]
    for t in threads:
        t.start()
    sent.wait()  # all four bodies are on the wire
    started = time.monotonic()
    answer = post(hook, review_doc(SERVICE))
    took = time.monotonic() - started
    for t in threads:
        t.join()
    assert answer["allowed"] is True
    assert took < 1.0, f"the Service review took {took:.2f}s behind four huge Deployments"
    assert len(answers) == 4
    assert not any(a["allowed"] for a in answers)  # denied, or failed closed under Fail
    assert_still_serving(hook)
