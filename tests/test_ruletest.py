"""`magtape test`: the built-in suite passes; failures, broken modules and engine
crashes are reported with the names a user needs, and the right exit code."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from magtape import ruletest

POLICY = """package kubernetes.admission.sample
import rego.v1

import data.magtape.lib.messages

policy_metadata := {"name": "sample", "severity": "LOW", "errcode": "MT9999", "targets": {"Pod"}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {
	matches
	input.request.object.metadata.labels.bad == "yes"
	info := messages.violation(policy_metadata, "labelled bad")
}
"""

TESTS = """package test.kubernetes.admission.sample
import rego.v1

import data.kubernetes.admission.sample as policy

pod(bad) := {"kind": {"kind": "Pod"}, "object": {"metadata": {"labels": {"bad": bad}}}}

test_bad_pod_fails if {
	messages := {d.msg | some d in policy.deny} with input.request as pod("yes")
	messages == {"[FAIL] LOW - labelled bad (MT9999)"}
}

test_this_one_is_wrong if {
	count(policy.deny) == 0 with input.request as pod("yes")
}
"""


def run(*dirs: str | Path, verbose: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = ruletest.run([str(d) for d in dirs], verbose, out)
    return code, out.getvalue()


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def count_tests(root: Path) -> int:
    return sum(len(ruletest.discover_tests(str(f), f.read_text(encoding="utf-8")))
               for f in root.rglob("*.rego"))


def test_builtin_policies_pass_and_report_the_count() -> None:
    code, out = run(REPO / "policies")
    expected = count_tests(REPO / "policies")
    assert expected > 100
    assert code == 0, out
    assert out.splitlines() == [f"{expected} passed, 0 failed"]


def test_verbose_lists_every_test_with_its_package() -> None:
    code, out = run(REPO / "policies" / "pdb", verbose=True)
    lines = out.splitlines()
    assert code == 0, out
    assert "PASS: test.kubernetes.admission.pdb.test_integer_min_available_fails" in lines
    assert all(line.startswith("PASS: ") for line in lines[:-1])
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed"


def test_the_cli_runs_the_same_suite() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    proc = subprocess.run([sys.executable, "-m", "magtape", "test", "policies/"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"\d+ passed, 0 failed\n", proc.stdout)


def test_a_failing_test_exits_1_naming_it(tmp_path: Path) -> None:
    write(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS})
    code, out = run(tmp_path)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith("FAIL: test.kubernetes.admission.sample.test_this_one_is_wrong")
    assert "sample/policy_test.rego" in lines[0]
    assert lines[-1] == "1 passed, 1 failed"
    assert not any(line.startswith("PASS") for line in lines)  # only with --verbose

    code, out = run(tmp_path, verbose=True)
    assert "PASS: test.kubernetes.admission.sample.test_bad_pod_fails" in out.splitlines()


def test_a_runtime_error_fails_the_test(tmp_path: Path) -> None:
    write(tmp_path, {"x_test.rego": """package test.conflict
import rego.v1

value := 1 if true

value := 2 if true

test_conflicting_values if {
	value == 1
}
"""})
    code, out = run(tmp_path)
    assert code == 1, out
    assert out.startswith("FAIL: test.conflict.test_conflicting_values  (evaluation error")


def test_a_broken_module_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"sample/policy.rego": POLICY,
                     "sample/policy_test.rego": TESTS.replace(
                         "test_this_one_is_wrong if {\n",
                         "test_this_one_is_wrong if {\n\tx := := 1\n")})
    code, out = run(tmp_path)
    assert code == 2, out
    broken = tmp_path / "sample" / "policy_test.rego"
    line = broken.read_text().splitlines().index("\tx := := 1") + 1
    assert f"{broken}:{line}: " in out
    assert "does not compile" in out


def test_a_crashing_test_exits_2_and_points_at_with_input(tmp_path: Path) -> None:
    # rego-cpp 1.5 aborts on a whole-input replacement when the rule calls a builtin.
    write(tmp_path, {"crash_test.rego": """package test.crash
import rego.v1

greeting := sprintf("hello %v", [input.request.name])

test_greeting if {
	greeting == "hello x" with input as {"request": {"name": "x"}}
}
"""})
    code, out = run(tmp_path)
    assert code == 2, out
    assert "crashed" in out
    assert f"{tmp_path / 'crash_test.rego'}:7" in out
    assert "with input.request as" in out


def test_an_arity_clash_exits_2_naming_both_definitions(tmp_path: Path) -> None:
    # rego-cpp 1.5 crashes when one function name has different arities in two packages.
    write(tmp_path, {
        "helpers_test.rego": "package test.helpers\nimport rego.v1\n\n"
                             'make(kind, spec) := {"kind": {"kind": kind}, "spec": spec}\n',
        "clash_test.rego": """package test.clash
import rego.v1

import data.test.helpers

is_pod if input.request.kind.kind == "Pod"

make(kind) := {"kind": {"kind": kind}}

test_is_pod if {
	is_pod with input.request as make("Pod")
}
"""})
    code, out = run(tmp_path)
    assert code == 2, out
    assert "crashed" in out
    assert f"make/1 at {tmp_path / 'clash_test.rego'}:8" in out
    assert f"make/2 at {tmp_path / 'helpers_test.rego'}:4" in out


def test_no_tests_exits_2(tmp_path: Path) -> None:
    write(tmp_path, {"policy.rego": POLICY})
    code, out = run(tmp_path)
    assert code == 2 and "no test_* rules found" in out


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    code, out = run(tmp_path / "nope")
    assert code == 2 and "does not exist" in out


def test_custom_policies_get_the_shared_library(tmp_path: Path) -> None:
    # POLICY imports data.magtape.lib.messages; only the policy folder is given.
    write(tmp_path, {"policy.rego": POLICY, "policy_test.rego": TESTS.split("test_this")[0]})
    code, out = run(tmp_path)
    assert (code, out) == (0, "1 passed, 0 failed\n")


def test_a_given_library_replaces_the_builtin_one(tmp_path: Path) -> None:
    # An edited copy of the library is tested as it is, not merged with the original.
    lib = write(tmp_path, {"lib/" + f.name: f.read_text() for f in (REPO / "policies/lib").iterdir()
                           if f.suffix == ".rego"}) / "lib"
    workloads = lib / "workloads.rego"
    workloads.write_text(workloads.read_text().replace('ref.kind == "Job"', 'ref.kind == "Nope"'))
    code, out = run(lib)
    assert code == 1, out
    assert "FAIL: test.magtape.lib.workloads.test_job_owned_pod_is_not_long_running" in out


@pytest.mark.parametrize("source, found", [
    ("package a.b\ntest_x if true\ntest_y := true\n", ["a.b.test_x", "a.b.test_y"]),
    ("# comment\npackage a\n\ntest_x if {\n}\ntest_x if { false }\n", ["a.test_x"]),
    ("package a\n  test_indented if true\nnot_test_x if true\n", []),
    ("no package here\ntest_x if true\n", []),
])
def test_discovery_reads_rule_names_at_line_start(source: str, found: list[str]) -> None:
    assert [t.qualified_name for t in ruletest.discover_tests("f.rego", source)] == found


def test_the_custom_policy_example_in_the_docs_passes_its_tests(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    policy, tests = re.findall(r"```rego\n(.*?)```", docs, re.DOTALL)
    write(tmp_path, {"image-tag/policy.rego": policy, "image-tag/policy_test.rego": tests})
    assert run(tmp_path) == (0, "2 passed, 0 failed\n")
