"""`magtape test --against-opa` prints every difference between MagTape's engine and real OPA.

A folder of custom policies holds one policy the engines decide differently
on its sample (decimals read from the input, which vetting cannot see:
docs/policies.md, "Exact numbers"), one MagTape refuses at load
(``crypto.sha256``) and one both decide alike; the report must name the
first two and not the third, and exit 1. A built-in policy folder gives no
difference and exits 0. Without OPA the command says how to get it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import REPO
from magtape.ruletest import run
from opasupport import OPA


def policy(package: str, name: str, errcode: str, condition: str) -> str:
    return (f"package kubernetes.admission.{package}\n\nimport rego.v1\n\n"
            f'policy_metadata := {{"name": "{name}", "severity": "HIGH", "errcode": '
            f'"{errcode}", "targets": {{"Widget"}}}}\n\n'
            "matches if input.request.kind.kind in policy_metadata.targets\n\n"
            f'deny contains {{"name": "{name}", "severity": "HIGH", "errcode": "{errcode}", '
            f'"msg": "[FAIL] HIGH - {name} ({errcode})"}} if {{\n{condition}\n}}\n')


SAMPLE = """apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
  namespace: default
spec:
  a: 0.1
  b: 0.2
  name: web
"""


def write(root: Path, folder: str, source: str, test: str = "") -> None:
    d = root / folder
    (d / "samples").mkdir(parents=True)
    (d / "policy.rego").write_text(source, encoding="utf-8")
    (d / "samples" / "allowed-widget.yaml").write_text(SAMPLE, encoding="utf-8")
    if test:
        (d / "policy_test.rego").write_text(test, encoding="utf-8")


def test_every_difference_is_printed(tmp_path: Path) -> None:
    spec = "\tspec := input.request.object.spec\n"
    write(tmp_path, "ratio", policy("ratio", "ratio", "MT9101",
                                    spec + "\tspec.a + spec.b > 0.3"))
    write(tmp_path, "digest", policy("digest", "digest", "MT9102",
                                     spec + '\tcrypto.sha256(spec.name) == "x"'))
    write(tmp_path, "named", policy("named", "named", "MT9103", spec + '\tspec.name == "db"'),
          test="package test.named\n\nimport rego.v1\n\nimport data.kubernetes.admission.named\n\n"
               "test_web_passes if {\n\tfound := named.deny with input.request as "
               '{"kind": {"kind": "Widget"}, "object": {"spec": {"name": "web"}}}\n'
               "\tcount(found) == 0\n}\n")
    out = io.StringIO()
    code = run([str(tmp_path)], False, out, against_opa=str(OPA))
    text = out.getvalue()
    assert code == 1, text
    assert "DIFF sample" in text and "policy kubernetes.admission.ratio" in text, text
    assert "MagTape: ['[FAIL] HIGH - ratio (MT9101)']" in text and "OPA:     []" in text
    assert "REFUSED by MagTape, evaluated by OPA" in text and "crypto.sha256" in text
    assert "admission.named" not in text.split("against real OPA")[1]
    assert "1 tests and 3 samples compared: 4 differences" in text


def test_a_builtin_policy_has_no_difference() -> None:
    out = io.StringIO()
    code = run([str(REPO / "policies" / "pdb")], False, out, against_opa=str(OPA))
    assert code == 0, out.getvalue()
    assert "samples compared: 0 differences" in out.getvalue()


def test_without_opa_it_says_how_to_get_it(tmp_path: Path) -> None:
    out = io.StringIO()
    missing = str(tmp_path / "no-opa")
    assert run([str(REPO / "policies" / "pdb")], False, out, against_opa=missing) == 2
    assert "is not on PATH" in out.getvalue() and "--opa PATH" in out.getvalue()


@pytest.mark.parametrize("argv", [["--opa", "x"]])
def test_opa_without_against_opa_is_a_usage_error(argv: list[str]) -> None:
    from magtape.ruletest import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, str(REPO / "policies" / "pdb")])
    assert exc.value.code == 2


def test_plain_magtape_test_notes_what_loading_would_refuse(tmp_path: Path) -> None:
    spec = "\tspec := input.request.object.spec\n"
    write(tmp_path, "digest", policy("digest", "digest", "MT9102",
                                     spec + '\tcrypto.sha256(spec.name) == "x"'),
          test="package test.digest\n\nimport rego.v1\n\ntest_truth if true\n")
    out = io.StringIO()
    assert run([str(tmp_path)], False, out) == 0
    text = out.getvalue()
    assert "digest/policy.rego:11: MagTape refuses this policy at load: the builtin " \
           "`crypto.sha256`" in text, text
