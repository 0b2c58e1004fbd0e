"""``POST /`` answers the same through the fast path as through Flask.

Why it exists: the admission app answers the common request (``POST /`` with a
Content-Length within the limit) without Flask's per-request machinery
(magtape.web, docs/performance.md) and leaves everything else to Flask. The
same bodies are sent both ways (with a Content-Length; without one, as a
chunked request arrives, which Flask reads) and must get the same status,
headers that matter, JSON and ``magtape_http_responses_total`` count.
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
    fast = client.post("/", data=body, content_type="application/json")
    # No usable Content-Length, the body terminated (as a chunked request comes): Flask's.
    flask = client.post("/", input_stream=io.BytesIO(body), content_type="application/json",
                        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""})
    assert not flask.request.environ.get("CONTENT_LENGTH")
    return [(r.status_code, r.headers.get("Content-Type"), r.get_json()) for r in (fast, flask)]


@pytest.mark.parametrize("name", BODIES)
def test_fast_path_and_flask_answer_alike(make_client: AppFactory, name: str) -> None:
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
