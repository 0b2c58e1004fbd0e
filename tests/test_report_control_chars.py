"""Control characters from a manifest in `magtape check` reports.

A name, namespace or container name is chosen by whoever wrote the manifest
(a pull request, say). The text report shows each control character escaped,
so a finding stays on its line and nothing can start a line with ``::``
(a GitHub Actions workflow command); GitHub annotations show them escaped
too (newlines as the runner's %0A); JUnit writes only what XML 1.0 can hold,
so the file always parses; JSON and SARIF, read by machines, keep the exact
strings.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from magtape.cli import main
from magtape.report.junit import JUnitCase, junit_xml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# What the text report must never print raw: C0 (newline and tab included), DEL,
# C1, and the Unicode line and paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# (what the manifest holds, how the text report shows it, how JUnit holds it)
HOSTILE = [
    ("\n::error::x", "\\x0a::error::x", "\n::error::x"),
    ("\r\n::add-mask::x", "\\x0d\\x0a::add-mask::x", "\r\n::add-mask::x"),
    ("\x1b[31m", "\\x1b[31m", "\\x1b[31m"),
    ("\x00", "\\x00", "\\x00"),
    ("\u2028::error::x", "\\u2028::error::x", "\u2028::error::x"),
    ("\x85::warning::x", "\\x85::warning::x", "\x85::warning::x"),  # C1 NEL
    ("\t\x7f\x0b\x0c", "\\x09\\x7f\\x0b\\x0c", "\t\x7f\\x0b\\x0c"),
]
IDS = ["newline", "crlf", "ansi", "nul", "line-separator", "c1-nel", "tab-del-vt-ff"]


def pod(value: str) -> dict[str, Any]:
    """A privileged Pod whose name, namespace and container name all end with ``value``."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"a{value}", "namespace": f"n{value}"},
            "spec": {"containers": [{"name": f"c{value}", "image": "nginx",
                                     "securityContext": {"privileged": True}}]}}


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str, value: str) -> str:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod(value)))  # \uXXXX escapes: any character gets through
    code = main(["check", "-o", fmt, str(manifest)])
    out, _ = capsys.readouterr()
    assert code == 1  # denied: privileged
    return out


@pytest.mark.parametrize(("value", "shown", "_"), HOSTILE, ids=IDS)
def test_text_report_escapes_control_characters_and_keeps_one_finding_per_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, shown: str,
        _: str) -> None:
    out = check(capsys, tmp_path, "text", value)
    lines = out.split("\n")
    assert not [ln for ln in lines if ln.lstrip().startswith("::")]  # the runner trims first
    assert not [ln for ln in lines if RAW_CONTROL.search(ln)]
    # The object's line, its findings indented under it, a blank line, the summary.
    assert lines[0] == f"DENIED Pod n{shown}/a{shown}  ({tmp_path / 'pod.json'}:1)"
    blank = lines.index("")
    assert all(ln.startswith("         ") for ln in lines[1:blank])
    assert lines[blank + 1].startswith("1 objects checked") and lines[blank + 2:] == [""]
    (deny,) = [ln for ln in lines if "MT2001" in ln and "deny:" in ln]
    assert deny.endswith(f'container "c{shown}" (MT2001)')
    assert f'"a{shown}" is a singleton pod.' in out


@pytest.mark.parametrize(("value", "_", "__"), HOSTILE, ids=IDS)
def test_github_annotations_hold_no_raw_control_character(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, _: str,
        __: str) -> None:
    """Newlines are the runner's %0A; every other control character is shown
    escaped, so each annotation stays one command on one line."""
    out = check(capsys, tmp_path, "github", value)
    lines = out.rstrip("\n").split("\n")
    assert not [ln for ln in lines if RAW_CONTROL.search(ln)]
    assert all(ln.startswith("::error ") or ln.startswith("::warning ")
               or ln.startswith("::notice ") or not ln.startswith("::") for ln in lines)
    assert any(ln.startswith("::error ") and "MT2001" in ln for ln in lines)


@pytest.mark.parametrize(("value", "_", "held"), HOSTILE, ids=IDS)
def test_junit_report_parses_and_keeps_the_escaped_names(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, _: str,
        held: str) -> None:
    out = check(capsys, tmp_path, "junit", value)
    root = ET.fromstring(out.encode())
    xmlschema.XMLSchema(SCHEMAS / "junit.xsd").validate(out.encode())
    cases = root.findall("testsuite/testcase")
    assert cases and {c.get("classname") for c in cases} == {f"Pod n{held}/a{held}"}
    (failed,) = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert failed is not None
    assert f'container "c{held}" (MT2001)' in (failed.get("message") or "")
    # In element text a raw CR is read as LF (XML end-of-line handling); attributes keep it.
    in_text = held.replace("\r\n", "\n")
    assert f'container "c{in_text}" (MT2001)' in (failed.text or "")


@pytest.mark.parametrize("value", ["\x00\x01\x08\x0b\x1f", "\ud800", "\udfff", "\ufffe\uffff"],
                         ids=["c0", "lone-high-surrogate", "lone-low-surrogate", "nonchars"])
def test_junit_writer_escapes_what_xml_cannot_hold_wherever_it_is(value: str) -> None:
    """``magtape test`` writes through junit_xml too: suite names, attributes and texts."""
    case = JUnitCase(f"cls{value}", f"name{value}", outcome="failure", message=f"msg{value}",
                     text=f"text{value}", kind=f"kind{value}", file=f"f{value}.yaml", line=3)
    out = junit_xml(f"run{value}", [(f"suite{value}", [case])])
    root = ET.fromstring(out.encode())  # lone surrogates would not even encode
    escaped = "".join(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                      for c in value)
    suite = root.find("testsuite")
    testcase = root.find("testsuite/testcase")
    failure = root.find("testsuite/testcase/failure")
    assert suite is not None and testcase is not None and failure is not None
    assert root.get("name") == f"run{escaped}" and suite.get("name") == f"suite{escaped}"
    assert (testcase.get("classname"), testcase.get("name"), testcase.get("file")) == (
        f"cls{escaped}", f"name{escaped}", f"f{escaped}.yaml")
    assert (failure.get("message"), failure.get("type"), failure.text) == (
        f"msg{escaped}", f"kind{escaped}", f"text{escaped}")


@pytest.mark.parametrize(("value", "_", "__"), HOSTILE, ids=IDS)
def test_json_and_sarif_keep_the_exact_strings(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, _: str,
        __: str) -> None:
    (obj,) = json.loads(check(capsys, tmp_path, "json", value))["objects"]
    assert (obj["name"], obj["namespace"]) == (f"a{value}", f"n{value}")
    (priv,) = [v for v in obj["violations"] if v["errcode"] == "MT2001"]
    assert priv["details"] == {"container": f"c{value}"}
    assert f'container "c{value}" (MT2001)' in priv["msg"]

    sarif = json.loads(check(capsys, tmp_path, "sarif", value))
    results = sarif["runs"][0]["results"]
    names = {loc["fullyQualifiedName"] for r in results
             for loc in r["locations"][0]["logicalLocations"]}
    assert names == {f"Pod n{value}/a{value}"}
    (priv_result,) = [r for r in results if r["ruleId"] == "MT2001"]
    assert f'container "c{value}" (MT2001)' in priv_result["message"]["text"]
