"""`magtape check`: files, directories, stdin, Lists, exit codes, JSON and JUnit output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from magtape.cli import main

DEPLOY = REPO / "testing" / "deployments"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("paths, level, code", [
    ([DEPLOY / "test-deploy01.yaml"], "LOW", 0),
    ([DEPLOY / "test-deploy02.yaml"], "LOW", 1),
    ([DEPLOY / "test-deploy02.yaml"], "OFF", 0),
    ([DEPLOY / "test-deploy03.yaml"], "LOW", 0),
    ([DEPLOY / "test-deploy03.yaml"], "HIGH", 1),
    ([DEPLOY], "LOW", 1),
    ([DEPLOY / "test-deploy01.yaml", DEPLOY / "test-deploy03.yaml"], "LOW", 0),
])
def test_exit_codes(capsys: pytest.CaptureFixture[str], paths: list[Path], level: str,
                    code: int) -> None:
    got, out, err = run(capsys, "--deny-level", level, *map(str, paths))
    assert got == code, out + err
    assert "objects checked at deny level " + level in out


def test_text_report_groups_by_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(DEPLOY / "test-deploy02.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("DENIED Deployment test1/test-deploy02")
    assert "deny: [FAIL] HIGH - Found privileged Security Context" in lines[1]
    assert sum("warn: [FAIL] LOW" in ln for ln in lines) == 4


def test_json_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "json", str(DEPLOY))
    doc = json.loads(out)
    assert code == 1 and doc["denyLevel"] == "LOW"
    by_name = {o["name"]: o for o in doc["objects"]}
    assert by_name["test-deploy01"]["allowed"] is True
    denied = by_name["test-deploy02"]
    assert denied["allowed"] is False
    assert {v["errcode"] for v in denied["violations"]} == {
        "MT1001", "MT1002", "MT1003", "MT1004", "MT2001"}
    assert [v["errcode"] for v in denied["violations"] if v["denies"]] == ["MT2001"]


def test_junit_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "junit", str(DEPLOY))
    root = ET.fromstring(out.split("\n", 1)[1])
    suite = root.find("testsuite")
    assert code == 1 and suite is not None
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "0")) == len(cases) >= 3
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert "test1/test-deploy02" in failed and int(suite.get("failures", "0")) == len(failed)


def test_stdin_and_lists_through_a_pipe(tmp_path: Path) -> None:
    """What `kubectl kustomize dir | magtape check -` does."""
    items = [yaml.safe_load(p.read_text()) for p in sorted(DEPLOY.glob("test-deploy0*.yaml"))]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    out = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "-"],
                         input=doc, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MAGTAPE_DENY_LEVEL": "LOW"})
    assert out.returncode == 1, out.stderr
    assert len(json.loads(out.stdout)["objects"]) == len(items)
    assert "items[1]" in json.loads(out.stdout)["objects"][1]["source"]


NODEPORT = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ports
  annotations:
    k8s.t-mobile.com/nodeportRange: "30100-30200"
---
apiVersion: v1
kind: Service
metadata:
  name: edge
  namespace: ports
spec:
  type: NodePort
  selector: {app: edge}
  ports:
  - {name: web, port: 80, targetPort: 8080, nodePort: %d}
"""


@pytest.mark.parametrize("node_port, code", [(30150, 0), (31000, 1)])
def test_namespace_objects_become_cluster_data(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, node_port: int, code: int) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text(NODEPORT % node_port)
    got, out, err = run(capsys, "--deny-level", "MED", str(f))
    assert got == code, out + err
    assert ("MT2002" in out) is bool(code)


def test_namespace_flag_and_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    svc = NODEPORT.split("---\n")[1].replace("  namespace: ports\n", "") % 31000
    (tmp_path / "svc.yaml").write_text(svc)
    (tmp_path / "ns.yaml").write_text(
        "kubernetes:\n  namespaces:\n    ports:\n      metadata:\n        annotations:\n"
        "          k8s.t-mobile.com/nodeportRange: '30100-30200'\n")
    got, out, _ = run(capsys, "--deny-level", "MED", "-n", "ports", "--data",
                      str(tmp_path / "ns.yaml"), str(tmp_path / "svc.yaml"))
    assert got == 1 and "Service ports/edge" in out


@pytest.mark.parametrize("content, message", [
    ("kind: [unclosed", "line 1"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n- just\n- a list\n", "#2: expected"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "#1: object has no 'kind'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "#1: Pod has no metadata.name"),
])
def test_input_errors_exit_2_naming_file_and_document(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, content: str,
                                                      message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    code, out, err = run(capsys, str(f))
    assert code == 2 and out == ""
    assert str(f) in err and message in err


def test_missing_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "/no/such/manifest.yaml")
    assert code == 2 and "/no/such/manifest.yaml: no such file" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--deny-level", "SOMETIMES", "x.yaml"])
    assert info.value.code == 2
    assert "accepted OFF, LOW, MED, HIGH" in capsys.readouterr().err


def test_empty_stdin_checks_nothing(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = run(capsys, "-")
    assert code == 0 and "0 objects checked" in out


def test_review_prints_what_the_api_server_would_send(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "-n", "other", str(DEPLOY / "test-deploy02.yaml")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    assert doc["request"]["kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert doc["request"]["namespace"] == "test1"  # the manifest's own namespace wins
    assert doc["request"]["operation"] == "CREATE" and doc["request"]["dryRun"] is False


CUSTOM = """package kubernetes.admission.no_latest
import rego.v1
import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {"name": "no-latest", "severity": "MED", "errcode": "MT9901",
                    "targets": workloads.kinds}

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
  matches
  some c in workloads.containers
  endswith(c.image, ":latest")
  info := messages.violation(policy_metadata, concat("", ["latest tag for ", c.name]))
}
"""


def test_custom_policies_get_the_builtin_library(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """`--policies` replaces the built-in checks but keeps the library they import."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.rego").write_text(CUSTOM)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
                        "spec:\n  containers:\n  - {name: app, image: 'nginx:latest'}\n")
    code, out, err = run(capsys, "--deny-level", "MED", "--policies",
                         str(tmp_path / "policies"), str(manifest))
    assert code == 1, err
    assert "[FAIL] MED - latest tag for app (MT9901)" in out
    assert "MT1001" not in out  # the built-in checks are not loaded
