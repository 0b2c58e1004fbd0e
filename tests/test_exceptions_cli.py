"""``magtape check --exceptions/--enforcement/--old`` decides as the webhook does.

The same inputs (manifests, MagTapeException files, the overrides ConfigMap,
the objects as they are now) go through ``magtape check`` on one side and, on
the other, through the admission app whose state is fed by the same watch
handlers the server uses, with hand-written CREATE/UPDATE AdmissionReviews as
the API server sends them. Every object must get the same decision and the
same failures, exempted ones included. Expiries are relative to the real
clock, far enough either side that both runs see the same state.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from enforcementsupport import client_for, container, deployment, exception, pod, with_finalizers
from magtape.cli import main
from magtape.enforcement import EnforcementState, Enforcer, labels_from_data, utc_now
from magtape.enforcement.state import ConfigWatch, ExceptionWatch
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import DenyLevel
from magtape.review import make_review

NOTES = ("[exempted by", "[already failing", "will block from")


def inputs() -> dict[str, Any]:
    now = utc_now()
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "prod", "labels": {"tier": "production"}}}
    legacy_old = with_finalizers(pod("legacy-old", container("app", privileged=True)),
                                 "example.com/stop")
    web_old = deployment("web", container("app"))
    released_old = pod("released", container("app"), namespace="prod")
    released = {**released_old, "metadata": {k: v for k, v in released_old["metadata"].items()
                                             if k != "ownerReferences"}}
    objects = [
        namespace,
        pod("legacy-1", container("app", privileged=True)),  # exempted
        pod("legacy-2", container("app", privileged=True), namespace="team-b"),  # other ns
        pod("stale-1", container("app", privileged=True)),  # its exception expired
        pod("plain", container("app", limits=False)),  # MT1003 LOW: enforce deny
        pod("sandboxed", container("app", privileged=True), namespace="team-c"),  # level OFF
        pod("soon", {**container("app"), "ports": [{"containerPort": 80, "hostPort": 80}]}),
        pod("strict", container("app", privileged=False, limits=False), namespace="prod"),
        with_finalizers(legacy_old),  # finalizer removal: UPDATE
        deployment("web", container("app"), container("debug", privileged=True)),  # UPDATE
        # Its ReplicaSet released it (UPDATE): no longer owned, yet not a new singleton
        # pod (MT1007) at deny level HIGH, or the controller could not release it.
        released,
    ]
    exceptions = [
        exception("legacy", expires=now + timedelta(days=30), created=None),
        exception("stale", expires=now - timedelta(days=1), created=now - timedelta(days=10),
                  names=["stale-*"]),
    ]
    enforcement = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "magtape-enforcement", "namespace": "magtape-system"},
                   "data": {"enforcement.yaml": yaml.safe_dump({
                       "checks": {"MT1003": {"enforce": "deny"},
                                  "MT1008": {"denyFrom": "2099-01-01"}},
                       "namespaces": [{"selector": {"matchLabels": {"tier": "production"}},
                                       "denyLevel": "HIGH"},
                                      {"selector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                                    "team-c"}},
                                       "denyLevel": "OFF"}]})}}
    return {"objects": objects, "exceptions": exceptions, "enforcement": enforcement,
            "old": [legacy_old, web_old, released_old]}


def run_check(tmp_path: Path, data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    files = {}
    for key in ("objects", "exceptions", "old"):
        files[key] = tmp_path / f"{key}.yaml"
        files[key].write_text(yaml.safe_dump_all(data[key]))
    files["enforcement"] = tmp_path / "enforcement.yaml"
    files["enforcement"].write_text(yaml.safe_dump(data["enforcement"]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "-o", "json", "-n", "team-a", str(files["objects"]),
                     "--exceptions", str(files["exceptions"]),
                     "--enforcement", str(files["enforcement"]), "--old", str(files["old"])])
    assert code in (0, 1)
    report = json.loads(out.getvalue())
    return {(o["namespace"] or "", o["name"]): o for o in report["objects"]
            if o["kind"] != "Namespace"}


def run_webhook(engine: EmbeddedEngine, data: dict[str, Any]
                ) -> dict[tuple[str, str], dict[str, Any]]:
    state = EnforcementState()
    # The handlers the server's watchers feed, given what a list would return.
    ExceptionWatch(state, timedelta(days=90)).replace(
        [dict(e, metadata={**e["metadata"], "creationTimestamp":
                           e["metadata"].get("creationTimestamp")
                           or utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")})
         for e in data["exceptions"]])
    ConfigWatch(state, "magtape-enforcement").replace([data["enforcement"]])
    namespaces = {"kubernetes": {"namespaces": {
        o["metadata"]["name"]: o for o in data["objects"] if o["kind"] == "Namespace"}}}
    enforcer = Enforcer(state, DenyLevel.LOW,
                        namespace_labels=lambda ns: labels_from_data(namespaces, ns))
    client = client_for(engine, enforcer)
    old = {(o["kind"], o["metadata"]["name"]): o for o in data["old"]}
    answers = {}
    for obj in data["objects"]:
        if obj["kind"] == "Namespace":
            continue
        ns = obj["metadata"].get("namespace", "team-a")
        doc = json.loads(make_review(obj, ns).raw)
        previous = old.get((obj["kind"], obj["metadata"]["name"]))
        if previous is not None:
            doc["request"]["operation"] = "UPDATE"
            doc["request"]["oldObject"] = previous
        answers[(ns, obj["metadata"]["name"])] = client.post("/", json=doc).get_json()["response"]
    return answers


def test_check_and_the_webhook_decide_the_same(tmp_path: Path,
                                               builtin_engine: EmbeddedEngine) -> None:
    data = inputs()
    checked = run_check(tmp_path, data)
    admitted = run_webhook(builtin_engine, data)
    assert set(checked) == set(admitted)
    summary = {}
    for key, answer in admitted.items():
        report = checked[key]
        warnings = answer.get("warnings", [])
        plain = sorted(w.split(" [")[0] if any(n in w for n in NOTES) else w for w in warnings)
        exempted = sorted(w for w in warnings if "[exempted by" in w)
        assert report["allowed"] is answer["allowed"], key
        assert sorted(v["msg"] for v in report["violations"]) == plain, key
        assert sorted(f"{v['msg']} {v['exempted']}" for v in report["violations"]
                      if "exempted" in v) == exempted, key
        summary[key[1]] = answer["allowed"]
    # And the decisions are the ones the inputs were written for.
    assert "[MT1008 will block from 2099-01-01]" in admitted[("team-a", "soon")]["warnings"][0]
    assert summary == {"legacy-1": True, "legacy-2": False, "stale-1": False, "plain": False,
                       "sandboxed": True, "soon": True, "strict": False, "legacy-old": True,
                       "web": False, "released": True}


@pytest.mark.parametrize("bad, message", [
    ({"spec": {"checks": ["MT2001"]}}, "spec.expiresAt is missing"),
    ({"kind": "ConfigMap"}, "a ConfigMap where a MagTapeException was expected"),
])
def test_check_refuses_an_exception_file_the_cluster_would_refuse(
        tmp_path: Path, bad: dict[str, Any], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    obj = exception(created=None)
    obj.update(bad)
    (tmp_path / "ex.yaml").write_text(yaml.safe_dump(obj))
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod("legacy-1")))
    code = main(["check", str(tmp_path / "pod.yaml"), "--exceptions", str(tmp_path / "ex.yaml")])
    assert code == 2
    assert message in capsys.readouterr().err
