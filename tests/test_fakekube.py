"""The shared fake API server behaves like the real one where MagTape depends on it.

Every assertion goes through the real ``kubernetes`` client, so a shape the
client cannot parse, or a status code it would map differently, fails here
before it misleads the adapter tests.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from fakekube import FakeKube, parse_label_selector


def _cm(name: str, ns: str = "default", labels: dict[str, str] | None = None,
        data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "data": data or {}}


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


@pytest.fixture
def core(fake_kube: FakeKube) -> client.CoreV1Api:
    return client.CoreV1Api(fake_kube.api_client())


def test_crud_round_trip(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", _cm("a", data={"k": "v"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    rv1 = int(created.metadata.resource_version)

    got = core.read_namespaced_config_map("a", "default")
    assert got.data == {"k": "v"}

    got.data["k"] = "w"
    replaced = core.replace_namespaced_config_map("a", "default", got)
    assert int(replaced.metadata.resource_version) > rv1
    assert replaced.metadata.uid == created.metadata.uid

    patched = core.patch_namespaced_config_map(
        "a", "default", {"metadata": {"annotations": {"x": "1"}}})
    assert patched.metadata.annotations == {"x": "1"} and patched.data == {"k": "w"}

    deleted = core.delete_namespaced_config_map("a", "default")
    assert deleted["status"] == "Success"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("a", "default")
    assert err.value.status == 404
    assert _status(err.value)["reason"] == "NotFound"
    assert _status(err.value)["message"] == 'configmaps "a" not found'


def test_create_twice_is_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", _cm("a"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", _cm("a"))
    assert err.value.status == 409
    assert _status(err.value)["reason"] == "AlreadyExists"


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map("default", _cm("a"))
    stale_rv = first.metadata.resource_version
    core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    first.data = {"y": "2"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("a", "default", first)
    assert err.value.status == 409
    assert _status(err.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "a", "default", {"metadata": {"resourceVersion": stale_rv}, "data": {"z": "3"}})
    assert err.value.status == 409


def test_noop_update_writes_nothing(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map("default", _cm("a", data={"k": "v"}))
    again = core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    assert again.metadata.resource_version == first.metadata.resource_version


def test_json_patch_and_merge_patch(fake_kube: FakeKube) -> None:
    fake_kube.seed(_cm("a", data={"k": "v"}))
    api = fake_kube.api_client()
    core = client.CoreV1Api(api)
    core.patch_namespaced_config_map(
        "a", "default", [{"op": "add", "path": "/data/n", "value": "1"},
                         {"op": "remove", "path": "/data/k"}])
    assert fake_kube.get("v1", "configmaps", "a", "default")["data"] == {"n": "1"}  # type: ignore[index]
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "a", "default", [{"op": "test", "path": "/data/n", "value": "2"}])
    assert err.value.status == 422
    patch_req = fake_kube.requests_matching("PATCH")[0]
    assert patch_req.content_type == "application/json-patch+json"


def test_secret_string_data_is_stored_as_base64(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret("default", {"metadata": {"name": "s"},
                                              "stringData": {"token": "abc"}})
    secret = core.read_namespaced_secret("s", "default")
    assert secret.data == {"token": "YWJj"} and secret.type == "Opaque"


def test_invalid_name_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", _cm("Not_Valid"))
    assert err.value.status == 422
    assert _status(err.value)["reason"] == "Invalid"


def test_generate_name(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(
        "default", {"metadata": {"generateName": "ev-"}, "data": {}})
    assert made.metadata.name.startswith("ev-") and len(made.metadata.name) > 3


def test_unknown_resource_is_404(fake_kube: FakeKube) -> None:
    api = fake_kube.api_client()
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).list_cluster_custom_object("example.com", "v1", "widgets")
    assert err.value.status == 404


def test_cluster_scoped_and_grouped_resources(fake_kube: FakeKube) -> None:
    api = fake_kube.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team-a", "labels": {"tier": "x"}}})
    assert [n.metadata.name for n in core.list_namespace().items] == ["team-a"]
    adm = client.AdmissionregistrationV1Api(api)
    adm.create_validating_webhook_configuration({
        "metadata": {"name": "hook"},
        "webhooks": [{"name": "a.example.com", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None",
                      "clientConfig": {"service": {"name": "s", "namespace": "n"}}}]})
    got = adm.read_validating_webhook_configuration("hook")
    assert got.webhooks[0].name == "a.example.com"
    ev = client.EventsV1Api(api)
    ev.create_namespaced_event("team-a", {"metadata": {"generateName": "x-"},
                                          "eventTime": "2024-01-01T00:00:00.000000Z",
                                          "reportingController": "magtape",
                                          "reportingInstance": "p", "action": "Deny",
                                          "reason": "PolicyFailed", "type": "Warning"})
    assert len(fake_kube.list("events.k8s.io/v1", "events", "team-a")) == 1


def test_selectors(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.seed(_cm("a", labels={"app": "x", "tier": "web"}),
                   _cm("b", labels={"app": "y"}), _cm("c", ns="other"))
    names = lambda sel: [i.metadata.name for i in  # noqa: E731
                         core.list_config_map_for_all_namespaces(label_selector=sel).items]
    assert names("app=x") == ["a"]
    assert names("app!=x") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("app in (x, y),!tier") == ["b"]
    assert names("app notin (x)") == ["b", "c"]
    by_field = core.list_namespaced_config_map("default", field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_field.items] == ["b"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", field_selector="spec.foo=b")
    assert err.value.status == 400
    with pytest.raises(ValueError):
        parse_label_selector("a in (b")


def test_list_items_carry_no_kind_and_list_carries_version(fake_kube: FakeKube) -> None:
    fake_kube.seed(_cm("a"))
    resp = client.CoreV1Api(fake_kube.api_client()).list_namespaced_config_map(
        "default", _preload_content=False)
    doc = json.loads(resp.data)
    assert doc["kind"] == "ConfigMapList"
    assert doc["metadata"]["resourceVersion"] == str(fake_kube.resource_version)
    assert "kind" not in doc["items"][0]


def test_watch_streams_changes_from_a_resource_version(fake_kube: FakeKube,
                                                       core: client.CoreV1Api) -> None:
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    start = core.list_namespaced_config_map("default").metadata.resource_version
    assert start != "0"  # "0" would mean "from the current state", not "from the beginning"
    core.create_namespaced_config_map("default", _cm("a", labels={"p": "1"}))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"p": None}}})
    core.delete_namespaced_config_map("a", "default")
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", label_selector="p=1",
                          resource_version=start):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    # Losing the label looks like a deletion to a selecting watcher; the real
    # deletion afterwards is not its business any more.
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_without_version_starts_with_current_objects(fake_kube: FakeKube,
                                                           core: client.CoreV1Api) -> None:
    fake_kube.seed(_cm("a"))
    events: list[dict[str, Any]] = []
    w = watch.Watch()
    done = threading.Event()

    def run() -> None:
        for event in w.stream(core.list_namespaced_config_map, "default"):
            events.append(event)
            if len(events) == 2:
                w.stop()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    fake_kube.wait_for(lambda: fake_kube.open_watches == 1, what="the watch to open")
    core.create_namespaced_config_map("default", _cm("b"))
    assert done.wait(10)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b")]


def test_watch_timeout_ends_the_stream(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    events = list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                       resource_version=str(fake_kube.resource_version),
                                       timeout_seconds=1))
    assert events == []


def test_too_old_resource_version_is_410(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.seed(_cm("first"))
    old = core.list_namespaced_config_map("default").metadata.resource_version
    fake_kube.seed(_cm("a"))
    fake_kube.compact()
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=old,
                                           _preload_content=False)
    line = json.loads(resp.readline())
    assert line["type"] == "ERROR"
    assert line["object"]["code"] == 410 and line["object"]["reason"] == "Expired"
    # The kubernetes client retries once from its last version, then gives up.
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version=old))
    assert err.value.status == 410
    # A fresh list gives a version that can be watched again.
    fresh = core.list_namespaced_config_map("default").metadata.resource_version
    assert list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                     resource_version=fresh, timeout_seconds=1)) == []


def test_end_watches_with_410_and_cleanly(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.seed(_cm("first"))
    outcome: dict[str, Any] = {}

    def run(key: str) -> None:
        try:
            list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                      resource_version=str(fake_kube.resource_version)))
            outcome[key] = "ended"
        except ApiException as exc:
            outcome[key] = exc.status

    t = threading.Thread(target=run, args=("expired",), daemon=True)
    t.start()
    fake_kube.wait_for(lambda: fake_kube.open_watches == 1, what="the watch to open")
    fake_kube.end_watches(410)
    t.join(10)
    assert outcome == {"expired": 410}

    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=str(fake_kube.resource_version),
        _preload_content=False)
    fake_kube.wait_for(lambda: fake_kube.open_watches == 1, what="the watch to open")
    fake_kube.end_watches()
    assert resp.read() == b""  # a clean end of the chunked stream


def test_faults_and_request_log(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.fail(500, method="GET", path=r"/configmaps$", times=1)
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default")
    assert err.value.status == 500
    assert _status(err.value)["reason"] == "InternalError"
    core.list_namespaced_config_map("default", label_selector="a=b")
    log = fake_kube.requests_matching("GET", r"/configmaps$")
    assert [r.query.get("labelSelector") for r in log] == [None, "a=b"]

    fake_kube.fail(503)
    with pytest.raises(ApiException) as err:
        core.list_namespace()
    assert err.value.status == 503
    fake_kube.clear_faults()
    core.list_namespace()


def test_rendezvous_forces_a_race(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.rendezvous(2, method="POST")
    results: list[Any] = []

    def create() -> None:
        try:
            core.create_namespaced_config_map("default", _cm("same"))
            results.append("created")
        except ApiException as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results, key=str) == [409, "created"]


def test_end_watches_with_another_error(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.seed(_cm("first"))
    resp = core.list_namespaced_config_map(
        "default", watch=True, resource_version=str(fake_kube.resource_version),
        _preload_content=False)
    fake_kube.wait_for(lambda: fake_kube.open_watches == 1, what="the watch to open")
    fake_kube.end_watches(500)
    event = json.loads(resp.readline())
    assert event == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "injected watch error", "reason": "InternalError", "code": 500}}
