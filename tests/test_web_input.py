"""Malformed input never gets a 500 or a stack trace, and the server keeps serving.

The fixed cases run against the real server (waitress on loopback), as the
nginx sidecar would reach it. The generated ones run mostly in-process (the
parser, then the whole Flask app without sockets) and only a few over HTTP:
the property is about our code, not about waitress, and 2,500 round trips
over real HTTP cost a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from conftest import admission_app, review_doc
from magtape.engine.embedded import EmbeddedEngine
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.review import MalformedReview, parse_review
from magtape.server import Webhook, start
from magtape.settings import DEFAULT_CONTROLLER_IDENTITIES, Address, HttpSettings, Settings

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "test1"},
       "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


@pytest.fixture(scope="module")
def server() -> Iterator[Webhook]:
    free = Address("127.0.0.1", 0)
    hook = start(Settings(http=HttpSettings(listen=free, metrics_listen=free,
                                            max_body_bytes=64 * 1024)))
    yield hook
    hook.stop(flush_seconds=1)


@pytest.fixture(scope="module")
def app_client(builtin_engine: EmbeddedEngine) -> FlaskClient:
    """The admission app without a listener: the fuzzing runs in-process."""
    settings = Settings(http=HttpSettings(max_body_bytes=64 * 1024))
    return admission_app(settings, builtin_engine, NullNotifier(),
                      Metrics(CollectorRegistry())).test_client()


@pytest.fixture(scope="module")
def url(server: Webhook) -> str:
    return f"http://127.0.0.1:{server.admission_port}/"


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _valid() -> dict[str, Any]:
    return review_doc(POD)


def _without(path: str) -> bytes:
    doc = _valid()
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    del target[last]
    return json.dumps(doc).encode()


def _with(path: str, value: Any) -> bytes:
    doc = _valid()
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    target[last] = value
    return json.dumps(doc).encode()


MALFORMED = {
    "not JSON": (b"this is not json", "not JSON"),
    "empty body": (b"", "not JSON"),
    "invalid UTF-8": (b'{"request": "\xff\xfe"}', "UTF-8"),
    "absurd nesting": (b"[" * 30_000 + b"]" * 30_000, "nested"),
    "nesting past the limit": (_with("request.object.spec", json.loads("[" * 150 + "]" * 150)),
                               "nested deeper than 100"),
    "a JSON array": (b"[1, 2, 3]", "JSON object"),
    "a JSON string": (b'"AdmissionReview"', "JSON object"),
    "no request": (json.dumps({"apiVersion": "admission.k8s.io/v1",
                               "kind": "AdmissionReview"}).encode(), "'request'"),
    "request is a list": (_with("request", []), "'request'"),
    "uid missing": (_without("request.uid"), "'request.uid' is missing"),
    "uid a number": (_with("request.uid", 42), "'request.uid' must be a string"),
    "uid empty": (_with("request.uid", ""), "'request.uid'"),
    "uid too long": (_with("request.uid", "u" * 200), "longer than 128"),
    "kind missing": (_without("request.kind"), "'request.kind' is missing"),
    "kind a string": (_with("request.kind", "Pod"), "'request.kind' must be an object"),
    "kind.kind missing": (_without("request.kind.kind"), "'request.kind.kind' is missing"),
    "object missing": (_without("request.object"), "'request.object' is missing"),
    "object null": (_with("request.object", None), "'request.object' must be an object"),
    "object a list": (_with("request.object", [POD]), "'request.object' must be an object"),
    "metadata a string": (_with("request.object.metadata", "x"), "metadata"),
    "dryRun a string": (_with("request.dryRun", "true"), "'request.dryRun' must be bool"),
    "namespace a number": (_with("request.namespace", 7), "'request.namespace'"),
    "unknown apiVersion": (_with("apiVersion", "admission.k8s.io/v2"), "unsupported apiVersion"),
    "unknown operation": (_with("request.operation", "EXPLODE"),
                          "'request.operation' must be one of CREATE, UPDATE, DELETE, CONNECT"),
    # What Python's decoder takes and the API server never writes:
    "NaN": (_with("request.object.spec", "X").replace(b'"X"', b"NaN"), "NaN is not a JSON number"),
    "Infinity": (_with("request.object.spec", "X").replace(b'"X"', b"-Infinity"),
                 "-Infinity is not a JSON number"),
    "a float past its range": (_with("request.object.spec", "X").replace(b'"X"', b"1e400"),
                               "1e400, out of a float's range"),
    "an integer of 5000 digits": (_with("request.object.spec", "X").replace(b'"X"', b"9" * 5000),
                                  "more than 4300 digits"),
    "a lone surrogate": (_with("request.object.metadata.name", "\ud800"), "lone UTF-16 surrogate"),
    "a lone surrogate in the uid": (_with("request.uid", "\udfff-1"), "lone UTF-16 surrogate"),
}


@pytest.mark.parametrize("body, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_review_gets_400_with_json_error(http: requests.Session, url: str,
                                                    body: bytes, expected: str) -> None:
    resp = http.post(url, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert expected in error
    assert "Traceback" not in resp.text
    # ...and the very next valid review is answered.
    ok = http.post(url, json=_valid())
    assert ok.status_code == 200 and ok.json()["response"]["allowed"] is True


def test_body_over_the_limit_gets_413(http: requests.Session, url: str) -> None:
    big = json.dumps(_valid() | {"padding": "x" * 70_000}).encode()
    resp = http.post(url, data=big)
    assert resp.status_code == 413
    assert resp.json() == {"error": "request body too large"}
    assert http.post(url, json=_valid()).status_code == 200


def test_chunked_body_over_the_limit_gets_413(http: requests.Session, url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    resp = http.post(url, data=chunks())
    assert resp.status_code == 413
    assert http.post(url, json=_valid()).status_code == 200


@pytest.mark.parametrize("method, path, code", [("GET", "/", 405), ("POST", "/nope", 404),
                                                 ("GET", "/metrics", 404)])
def test_other_routes_answer_json(http: requests.Session, url: str, method: str, path: str,
                                  code: int) -> None:
    resp = http.request(method, url.rstrip("/") + path)
    assert resp.status_code == code and "error" in resp.json()


# Values of every JSON type, nested a little: what a confused client may send.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                      children, max_size=3),
    max_leaves=8)


@st.composite
def malformed_reviews(draw: st.DrawFn) -> bytes:
    """A valid review with one part replaced by a random value, or random bytes."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=64))
    doc = _valid()
    targets = [doc, doc["request"], doc["request"]["kind"], doc["request"]["object"]]
    target = draw(st.sampled_from(targets))
    key = draw(st.sampled_from(sorted(target)))
    target[key] = draw(json_values)
    if choice == 3:
        del target[key]
    return json.dumps(doc).encode()


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=malformed_reviews())
def test_generated_reviews_parse_or_are_refused_as_malformed(body: bytes) -> None:
    """The parser, in-process: a Review whose accessors all work, or MalformedReview."""
    try:
        review = parse_review(body)
    except MalformedReview as exc:
        assert str(exc)
        return
    for accessor in ("uid", "kind", "namespace", "name", "operation", "dry_run", "username"):
        getattr(review, accessor)
    review.created_by_controller(DEFAULT_CONTROLLER_IDENTITIES)
    assert json.loads(review.raw)["request"]["uid"] == review.uid


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=malformed_reviews())
def test_generated_malformed_reviews_never_get_a_500(app_client: FlaskClient,
                                                     body: bytes) -> None:
    """The whole admission app, in-process (no sockets): 200 or a JSON 400, never a 500."""
    resp = app_client.post("/", data=body)
    assert resp.status_code in (200, 400), resp.data
    doc = resp.get_json()
    if resp.status_code == 400:
        assert isinstance(doc["error"], str)
    else:
        assert isinstance(doc["response"]["allowed"], bool)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=malformed_reviews())
def test_generated_malformed_reviews_over_http(http: requests.Session, url: str,
                                               body: bytes) -> None:
    """A few of the same over real waitress, as the nginx sidecar reaches it."""
    resp = http.post(url, data=body)
    assert resp.status_code in (200, 400), resp.text
    assert isinstance(resp.json(), dict)


def test_server_still_answers_after_the_fuzzing(http: requests.Session, url: str,
                                                server: Webhook) -> None:
    assert http.post(url, json=_valid()).json()["response"]["uid"] == _valid()["request"]["uid"]
    health = http.get(f"http://127.0.0.1:{server.admission_port}/healthz").json()
    assert health["health"] == "ok" and health["pod_name"] == "magtape" and health["date_time"]


@pytest.mark.parametrize("keep", [False, True])
def test_managed_fields_reach_policies_only_when_kept(keep: bool) -> None:
    from magtape.review import parse_review

    doc = _valid()
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    doc["request"]["object"]["metadata"]["managedFields"] = managed
    doc["request"]["oldObject"] = json.loads(json.dumps(doc["request"]["object"]))
    review = parse_review(json.dumps(doc).encode(), keep_managed_fields=keep)
    seen = json.loads(review.raw)["request"]
    for key in ("object", "oldObject"):
        assert ("managedFields" in seen[key]["metadata"]) is keep
    assert seen["object"]["spec"] == POD["spec"]
