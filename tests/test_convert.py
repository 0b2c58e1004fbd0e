"""`magtape policy convert` keeps what an original MagTape policy decides.

The policies in tests/original/ are written in the original MagTape's format
(Rego v0: ``deny[info] {``, ``re_match``, ``else =`` chains). The original
ran them on OPA; here real OPA evaluates them as written (``opa eval
--v0-compatible``), MagTape's engine evaluates what ``magtape policy
convert`` made of them, on every manifest of testing/ (the walk-through's,
with its namespace as cluster data), and the messages must be identical,
denials included. The converted text must also pass ``opa check`` as Rego
v1, the unconverted one must be refused at load with the command to run,
and a ConfigMap manifest converts in place.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from magtape.check.manifests import read_manifests
from magtape.cli import main
from magtape.engine.convert import ConvertError, convert
from magtape.engine.embedded import EmbeddedEngine
from magtape.policy import PolicyModule
from magtape.review import make_review
from opasupport import OPA

ORIGINAL = REPO / "tests" / "original"
POLICIES = sorted(ORIGINAL.glob("*.rego"))


def package(source: str) -> str:
    return next(line.split()[1] for line in source.splitlines() if line.startswith("package "))


@pytest.fixture(scope="module")
def reviews() -> list[tuple[str, str]]:
    found = read_manifests([str(REPO / "testing")], io.StringIO())
    return [(f"{m.path}#{m.index}", make_review(m.obj, m.namespace("test1")).raw)
            for m in found.manifests if m.kind != "Namespace"]


@pytest.fixture(scope="module")
def namespaces() -> dict[str, Any]:
    ns = yaml.safe_load((REPO / "testing" / "namespaces" / "test1.yaml").read_text())
    return {ns["metadata"]["name"]: ns}


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    e = EmbeddedEngine(workers=1)
    yield e
    e.close()


def opa_messages(policy: Path, reviews: list[tuple[str, str]], namespaces: dict[str, Any],
                 tmp: Path) -> list[set[str]]:
    """Each review's deny messages from real OPA on the original (v0) text,
    counted only when the policy's ``matches`` holds, as MagTape counts them."""
    pkg = package(policy.read_text())
    (tmp / "input.json").write_text(
        '{"cases": [' + ",".join(raw for _, raw in reviews) + "]}", encoding="utf-8")
    (tmp / "data.json").write_text(json.dumps({"kubernetes": {"namespaces": namespaces}}))
    query = (f"[r | c := input.cases[_]; r := {{m | data.{pkg}.matches with input as c; "
             f"d := data.{pkg}.deny[_] with input as c; m := d.msg}}]")
    out = subprocess.run([str(OPA), "eval", "--v0-compatible", "-f", "json",
                          "-d", str(policy), "-d", str(tmp / "data.json"),
                          "-i", str(tmp / "input.json"), query],
                         check=True, capture_output=True, text=True).stdout
    return [set(r) for r in json.loads(out)["result"][0]["expressions"][0]["value"]]


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_the_converted_policy_decides_as_the_original_did_on_opa(
        policy: Path, engine: EmbeddedEngine, reviews: list[tuple[str, str]],
        namespaces: dict[str, Any], tmp_path: Path) -> None:
    from magtape.review import parse_review

    converted = convert(policy.read_text(encoding="utf-8"), policy.name)
    report = engine.load([PolicyModule("test", policy.name, converted)],
                         {"kubernetes": {"namespaces": namespaces}})
    assert report.errors == ()
    expected = opa_messages(policy, reviews, namespaces, tmp_path)
    got = [{v.msg for r in engine.evaluate(parse_review(raw.encode())).results
            for v in r.violations} for _, raw in reviews]
    assert got == expected
    assert any(expected), "no manifest of testing/ fails this policy: the test proves nothing"


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_the_converted_policy_is_rego_v1_for_opa(policy: Path, tmp_path: Path) -> None:
    target = tmp_path / policy.name
    target.write_text(convert(policy.read_text(encoding="utf-8"), policy.name))
    subprocess.run([str(OPA), "check", str(target)], check=True)
    text = target.read_text()
    assert "import rego.v1" in text and "re_match(" not in text
    assert "deny contains info if {" in text


def test_an_unconverted_policy_is_refused_at_load_with_the_command(
        engine: EmbeddedEngine) -> None:
    policy = POLICIES[0]
    report = engine.load([PolicyModule("configmap magtape-system/x", "x/policy.rego",
                                       policy.read_text())], {})
    (error,) = report.errors
    assert "`magtape policy convert" in error.message and error.line is not None


def test_a_configmap_converts_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    source = POLICIES[0].read_text()
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "policy-privileged-pod", "namespace": "magtape-system",
                     "labels": {"openpolicyagent.org/policy": "rego"}},
        "data": {"policy-privileged-pod-check.rego": source}}))
    assert main(["policy", "convert", "--write", str(manifest)]) == 0
    doc = yaml.safe_load(manifest.read_text())
    assert doc["metadata"]["labels"] == {"openpolicyagent.org/policy": "rego"}
    assert doc["data"]["policy-privileged-pod-check.rego"] == convert(source)
    assert main(["policy", "convert", "--write", str(manifest)]) == 0
    assert "already Rego v1" in capsys.readouterr().err


def test_what_is_not_rego_cannot_be_converted(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="not valid Rego v0 either"):
        convert("package x\n\ndeny[msg] {\n")
    broken = tmp_path / "broken.rego"
    broken.write_text("package x\n\np {\n")
    assert main(["policy", "convert", str(broken)]) == 2
    assert "broken.rego" in capsys.readouterr().err
