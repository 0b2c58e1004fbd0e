"""``POST /``, the one admission path, answers alike however its body arrives.

Why it exists: the admission endpoint is a plain WSGI function in front of
Flask (magtape.web, docs/performance.md). The same bodies are sent with a
Content-Length and without one (input marked terminated, as a server that
does not count the body presents it) and must get the same status, headers
that matter, JSON and ``magtape_http_responses_total`` count; a request that
gives neither has an empty body (a 400), a body over the limit is 413, any
other method 405.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import AppFactory, review_doc
from magtape.metrics import Metrics

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "test1"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "c", "image": "nginx", "securityContext": {"privileged": True}}]}}}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "test1"},
           "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}
BODIES = {
    "denied": json.dumps(review_doc(DEPLOYMENT)).encode(),
    "allowed": json.dumps(review_doc(SERVICE)).encode(),
    "not json": b"{nope",
    "not an object": b"[1, 2]",
    "empty": b"",
}


class ExplodingMetrics(Metrics):
    """A defect after the decision: the handler of last resort must answer."""

    def observe_admission(self, *args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("defect")


def both_ways(client: Any, body: bytes) -> list[tuple[int, str | None, Any]]:
    counted = client.post("/", data=body, content_type="application/json")
    # No usable Content-Length, the body terminated instead.
    terminated = client.post("/", input_stream=io.BytesIO(body), content_type="application/json",
                             environ_overrides={"wsgi.input_terminated": True,
                                                "CONTENT_LENGTH": ""})
    assert not terminated.request.environ.get("CONTENT_LENGTH")
    return [(r.status_code, r.headers.get("Content-Type"), r.get_json())
            for r in (counted, terminated)]


@pytest.mark.parametrize("name", BODIES)
def test_a_body_is_answered_alike_however_it_arrives(make_client: AppFactory, name: str) -> None:
    metrics = Metrics(CollectorRegistry())
    fast, flask = both_ways(make_client(metrics=metrics), BODIES[name])
    assert fast == flask
    assert fast[1] == "application/json"
    code = str(fast[0])
    assert metrics.registry.get_sample_value(
        "magtape_http_responses_total", {"code": code}) == 2


def test_a_defect_is_a_500_with_json_both_ways(make_client: AppFactory) -> None:
    metrics = ExplodingMetrics(CollectorRegistry())
    fast, flask = both_ways(make_client(metrics=metrics), BODIES["allowed"])
    assert fast == flask == (500, "application/json",
                             {"error": "internal error; see the MagTape logs"})
    assert metrics.registry.get_sample_value(
        "magtape_http_responses_total", {"code": "500"}) == 2


def test_without_a_length_or_a_terminated_input_the_body_is_empty(make_client: AppFactory
                                                                  ) -> None:
    client = make_client()
    resp = client.post("/", input_stream=io.BytesIO(BODIES["allowed"]),
                       environ_overrides={"CONTENT_LENGTH": ""})
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_a_terminated_body_over_the_limit_is_413(make_client: AppFactory) -> None:
    client = make_client()
    resp = client.post("/", input_stream=io.BytesIO(b"x" * (4 * 1024 * 1024)),
                       environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert (resp.status_code, resp.get_json()) == (413, {"error": "request body too large"})


def test_other_methods_on_the_admission_path_are_405_with_allow(make_client: AppFactory) -> None:
    resp = make_client().get("/")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert resp.get_json() == {"error": "method not allowed"}
