"""`magtape check -o json|junit|sarif|github`: each format's content, validated against its schema.

SARIF is validated against the OASIS SARIF 2.1.0 schema and JUnit against an
XSD, both vendored in tests/schemas/.
"""

from __future__ import annotations

import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import xmlschema

from conftest import REPO
from magtape.cli import main

SCHEMAS = Path(__file__).resolve().parent / "schemas"
DEPLOY = REPO / "testing" / "deployments"
EXTRA = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: []
---
apiVersion: v1
kind: Service
metadata: {name: edge, namespace: test1}
spec:
  ports:
  - {name: http, port: 443}
"""


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    (tmp_path / "extra.yaml").write_text(EXTRA)
    return [str(DEPLOY), str(tmp_path / "extra.yaml")]


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    out, _ = capsys.readouterr()
    return code, out


def test_json_has_separate_source_fields_counts_details_and_remedies(
        capsys: pytest.CaptureFixture[str], inputs: list[str]) -> None:
    code, out = check(capsys, "-o", "json", *inputs)
    doc = json.loads(out)
    assert code == 1 and doc["denyLevel"] == "LOW"
    assert doc["summary"] == {"objects": 5, "passed": 1, "warned": 1, "denied": 2,
                              "skipped": 1, "exempted": 0, "errors": 0,
                              "nonKubernetesDocuments": 0}
    by_name = {o["name"]: o for o in doc["objects"]}
    denied = by_name["test-deploy02"]
    assert (denied["path"], denied["document"], denied["line"], denied["item"]) == (
        str(DEPLOY / "test-deploy02.yaml"), 1, 2, None)
    assert denied["verdict"] == "DENIED" and denied["allowed"] is False
    assert {v["errcode"] for v in denied["violations"]} == {
        "MT1001", "MT1002", "MT1003", "MT1004", "MT2001"}
    (priv,) = [v for v in denied["violations"] if v["denies"]]
    assert priv["errcode"] == "MT2001" and priv["details"] == {"container": "test-deploy02"}
    assert priv["hint"].startswith("Remove privileged: true")
    assert priv["url"].endswith("/policies/privileged-pod/README.md")
    role = by_name["reader"]
    assert role["verdict"] == "SKIP" and role["namespace"] is None and role["checks"] == []


def test_junit_has_one_case_per_object_and_check_and_validates(
        capsys: pytest.CaptureFixture[str], inputs: list[str]) -> None:
    code, out = check(capsys, "-o", "junit", *inputs)
    assert code == 1
    xmlschema.XMLSchema(SCHEMAS / "junit.xsd").validate(out.encode())
    suite = ET.fromstring(out.encode()).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    deploy02 = [c for c in cases if c.get("classname") == "Deployment test1/test-deploy02"]
    # Every check that targets Deployments is one case: 8 of the 12 built-in checks.
    assert len(deploy02) == 8
    assert {c.get("file") for c in deploy02} == {str(DEPLOY / "test-deploy02.yaml")}
    assert {c.get("line") for c in deploy02} == {"2"}
    failed = [c.get("name") for c in deploy02 if c.find("failure") is not None]
    assert failed == ["MT2001 privileged-pod"]
    failure = next(c for c in deploy02 if c.get("name") == "MT2001 privileged-pod").find(
        "failure")
    assert failure is not None and failure.get("type") == "HIGH"
    assert "How to fix: Remove privileged: true" in (failure.text or "")
    warned = next(c for c in deploy02 if c.get("name") == "MT1001 liveness-probe")
    assert "Liveness Probe missing" in (warned.findtext("system-out") or "")
    (role,) = [c for c in cases if c.get("classname") == "ClusterRole reader"]
    assert role.find("skipped") is not None
    assert int(suite.get("tests", "0")) == len(cases)
    assert int(suite.get("failures", "0")) == sum(c.find("failure") is not None for c in cases)
    assert int(suite.get("skipped", "0")) == sum(c.find("skipped") is not None for c in cases)


def test_junit_schema_rejects_what_ci_cannot_read() -> None:
    """The vendored XSD can fail: a case without a name, a count that is not a number."""
    schema = xmlschema.XMLSchema(SCHEMAS / "junit.xsd")
    assert not schema.is_valid('<testsuites><testsuite name="s" tests="1">'
                               '<testcase classname="c"/></testsuite></testsuites>')
    assert not schema.is_valid('<testsuites><testsuite name="s" tests="x"/></testsuites>')


def sarif_of(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out = check(capsys, "-o", "sarif", *args)
    doc = json.loads(out)
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft7Validator(schema).validate(doc)
    return code, doc


def test_sarif_validates_and_describes_rules_from_the_readmes(
        capsys: pytest.CaptureFixture[str], inputs: list[str]) -> None:
    code, doc = sarif_of(capsys, *inputs)
    assert code == 1 and doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    # One rule per loaded check: the built-ins (the original twelve and the PSS checks).
    assert len(rules) == len([d for d in (REPO / "policies").iterdir()
                              if (d / "policy.rego").is_file()])
    rule = next(r for r in rules if r["id"] == "MT2001")
    assert rule["name"] == "PrivilegedPod"
    assert rule["shortDescription"]["text"] == "MT2001 · privileged-pod · HIGH"
    assert rule["fullDescription"]["text"].startswith("Checks that no container runs")
    assert rule["helpUri"].endswith("/policies/privileged-pod/README.md")
    assert rule["help"]["text"].startswith("Remove privileged: true")
    assert rule["defaultConfiguration"]["level"] == "error"  # HIGH denies at LOW
    assert next(r for r in rules if r["id"] == "MT1001")["defaultConfiguration"]["level"] \
        == "warning"
    results = run["results"]
    priv = next(r for r in results if r["ruleId"] == "MT2001")
    assert priv["level"] == "error" and rules[priv["ruleIndex"]]["id"] == "MT2001"
    assert priv["message"]["text"].startswith(
        '[FAIL] HIGH - Found privileged Security Context for container "test-deploy02" '
        "(MT2001)\nHow to fix: ")
    (loc,) = priv["locations"]
    assert loc["physicalLocation"]["region"] == {"startLine": 2}
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == (
        DEPLOY / "test-deploy02.yaml").as_uri()
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == "Deployment test1/test-deploy02"
    assert {r["ruleId"] for r in results if r["level"] == "error"} == {"MT2001", "MT1006"}
    assert len({r["partialFingerprints"]["magtapeFinding/v1"] for r in results}) == len(results)


def test_sarif_relative_paths_and_stdin(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    _, doc = sarif_of(capsys, "testing/deployments/test-deploy02.yaml")
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in doc["runs"][0]["results"]}
    assert uris == {"testing/deployments/test-deploy02.yaml"}
    monkeypatch.setattr(sys, "stdin", io.StringIO((DEPLOY / "test-deploy02.yaml").read_text()))
    _, doc = sarif_of(capsys, "-")
    (loc,) = {json.dumps(r["locations"]) for r in doc["runs"][0]["results"]}
    assert "physicalLocation" not in loc and "Deployment test1/test-deploy02" in loc


def test_sarif_schema_can_fail() -> None:
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    bad = {"version": "2.1.0", "runs": [{"tool": {"driver": {}}, "results": []}]}
    assert not jsonschema.Draft7Validator(schema).is_valid(bad)  # driver.name is required


def test_github_annotations(capsys: pytest.CaptureFixture[str], inputs: list[str]) -> None:
    code, out = check(capsys, "-o", "github", *inputs)
    lines = out.splitlines()
    assert code == 1
    path = DEPLOY / "test-deploy02.yaml"
    priv = next(ln for ln in lines if "MT2001" in ln)
    assert priv.startswith(f"::error file={path},line=2,title=MT2001 privileged-pod::"
                           "Deployment test1/test-deploy02: [FAIL] HIGH - Found privileged ")
    assert "%0AHow to fix: Remove privileged" in priv and "\n" not in priv
    assert next(ln for ln in lines if "MT1001" in ln).startswith("::warning file=")
    assert sum(ln.startswith("::") for ln in lines) == 5 + 3 + 1  # deploy02, deploy03, edge
    assert lines[-1].startswith("magtape check: 5 objects at deny level LOW: 2 denied")


def test_github_property_escaping(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "a,b:c%.yaml"
    f.write_text((DEPLOY / "test-deploy02.yaml").read_text())
    _, out = check(capsys, "-o", "github", str(f))
    escaped = str(f).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert f"::error file={escaped},line=2," in out


BROKEN = """package kubernetes.admission.broken

import rego.v1

policy_metadata := {"name": "broken", "severity": "HIGH", "errcode": "MT9902", "targets": {"Pod"}}

# Two values for one complete rule, only for a labelled object: a runtime error.
boom := 1 if input.request.object.metadata.labels.boom == "yes"

boom := 2 if input.request.object.metadata.labels.boom == "yes"

matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": "[FAIL] HIGH - boom (MT9902)", "policy": "broken", "severity": "HIGH",
               "errcode": "MT9902"} if boom == 1
"""
PODS = ('apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {boom: "yes"}}\n'
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\n")


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "sarif", "github", "html"])
def test_a_policy_failing_at_runtime_is_an_error_in_every_format(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.rego").write_text(BROKEN)
    (tmp_path / "pods.yaml").write_text(PODS)
    code = main(["check", "-o", fmt, "--policies", str(tmp_path / "p"),
                 str(tmp_path / "pods.yaml")])
    out, err = capsys.readouterr()
    assert code == 2 and "1 objects could not be checked" in err
    message = "policy broken (MT9902) failed: "
    if fmt == "text":
        assert out.startswith(f"ERROR  Pod x/a  ({tmp_path / 'pods.yaml'}:1)\n"
                              f"         error: {message}")
        assert "\nPASS   Pod x/b" in out
    elif fmt == "json":
        a, b = json.loads(out)["objects"]
        assert a["verdict"] == "ERROR" and a["errors"][0].startswith(message)
        assert b["verdict"] == "PASS"
    elif fmt == "junit":
        xmlschema.XMLSchema(SCHEMAS / "junit.xsd").validate(out.encode())
        suite = ET.fromstring(out.encode()).find("testsuite")
        assert suite is not None and suite.get("errors") == "1"
        (error,) = [c for c in suite.findall("testcase") if c.find("error") is not None]
        assert error.get("classname") == "Pod x/a" and error.get("name") == "MT9902 broken"
    elif fmt == "sarif":
        schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
        doc = json.loads(out)
        jsonschema.Draft7Validator(schema).validate(doc)
        (invocation,) = doc["runs"][0]["invocations"]
        assert invocation["executionSuccessful"] is False
        assert message in invocation["toolExecutionNotifications"][0]["message"]["text"]
    elif fmt == "html":
        assert "<h2>Could not be checked</h2>" in out
        assert f"<li>Pod x/a: {message}" in out
        assert "<strong>1</strong>could not be checked" in out
    else:
        assert out.startswith("::error file=") and "title=MagTape policy error::" in out


def test_parts_rendered_for_one_format_are_not_used_by_another() -> None:
    from magtape.check.model import CheckRun
    from magtape.policy import DenyLevel
    from magtape.remediation import Catalogue
    from magtape.report import render

    run = CheckRun((), (), DenyLevel.LOW, Catalogue([]), parts={"json": ("NOT TEXT",)})
    assert "NOT TEXT" not in render("text", run)
    assert "NOT TEXT" in render("json", run)
