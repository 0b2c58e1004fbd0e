"""`magtape test`: the built-in suite passes, with the same verdict per test as
real `opa test`; failures, broken modules, runaway and crashing tests are
reported with the names a user needs, and the right exit code; --run, -o
json|junit and --coverage."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import xmlschema

from conftest import REPO, write_tree
from magtape import ruletest
from opasupport import opa_test_results

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


def run(*dirs: str | Path, verbose: bool = False, **options: object) -> tuple[int, str]:
    out = io.StringIO()
    code = ruletest.run([str(d) for d in dirs], verbose, out, **options)  # type: ignore[arg-type]
    return code, out.getvalue()


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
    write_tree(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS})
    code, out = run(tmp_path)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith("FAIL: test.kubernetes.admission.sample.test_this_one_is_wrong")
    assert "sample/policy_test.rego" in lines[0]
    assert lines[-1] == "1 passed, 1 failed"
    assert not any(line.startswith("PASS") for line in lines)  # only with --verbose

    code, out = run(tmp_path, verbose=True)
    assert "PASS: test.kubernetes.admission.sample.test_bad_pod_fails" in out.splitlines()


CONFLICT_TESTS = """package test.conflict
import rego.v1

value := 1 if true

value := 2 if true

test_conflicting_values if {
	value == 1
}

test_conflicting_values_again if {
	value == 2
}
"""


def test_a_runtime_error_fails_the_test_and_is_said_once(tmp_path: Path) -> None:
    write_tree(tmp_path, {"x_test.rego": CONFLICT_TESTS})
    code, out = run(tmp_path)
    assert code == 1, out
    lines = out.splitlines()
    where = f"{tmp_path / 'x_test.rego'}:6: "
    assert lines[0].startswith("FAIL: test.conflict.test_conflicting_values  (evaluation "
                               f"error: {where}")
    assert lines[1].startswith("FAIL: test.conflict.test_conflicting_values_again  (the same "
                               "evaluation error as above")
    assert out.count(where) == 1


def test_a_broken_module_exits_2_naming_file_and_line_once(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY,
                     "sample/policy_test.rego": TESTS.replace(
                         "test_this_one_is_wrong if {\n",
                         "test_this_one_is_wrong if {\n\tx := := 1\n")})
    code, out = run(tmp_path)
    assert code == 2, out
    broken = tmp_path / "sample" / "policy_test.rego"
    line = broken.read_text().splitlines().index("\tx := := 1") + 1
    assert out.count(f"{broken}:{line}: ") == 1
    assert "does not compile" in out


RUNAWAY_TESTS = """package test.runaway
import rego.v1

test_fine if true

test_forever if {
	every i in numbers.range(1, 100000) {
		every j in numbers.range(1, 100000) {
			i + j > 0
		}
	}
}

test_fine_after if true
"""


def test_a_runaway_test_fails_alone_and_the_run_goes_on(tmp_path: Path) -> None:
    write_tree(tmp_path, {"runaway_test.rego": RUNAWAY_TESTS})
    code, out = run(tmp_path, timeout=1.0)
    assert code == 1, out
    failure, summary = out.splitlines()
    assert failure.startswith("FAIL: test.runaway.test_forever  (the engine stopped: "
                              "no answer within 1s")
    assert failure.endswith(f"; {tmp_path / 'runaway_test.rego'}:6)")
    assert summary == "2 passed, 1 failed"


def test_a_memory_bomb_fails_alone(tmp_path: Path) -> None:
    write_tree(tmp_path, {"bomb_test.rego": """package test.bomb
import rego.v1

test_bomb if count(numbers.range(1, 100000000)) > 0

test_fine if true
"""})
    files, tests = ruletest.collect([str(tmp_path)])
    results = {r.test.name: r for r in ruletest.run_tests(files, tests, memory_mb=300).results}
    assert results["test_fine"].passed
    assert not results["test_bomb"].passed
    assert "memory cap exceeded" in results["test_bomb"].detail


def test_no_tests_exits_2(tmp_path: Path) -> None:
    write_tree(tmp_path, {"policy.rego": POLICY})
    code, out = run(tmp_path)
    assert code == 2 and "no test_* rules found" in out


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    code, out = run(tmp_path / "nope")
    assert code == 2 and "does not exist" in out


def test_custom_policies_get_the_shared_library(tmp_path: Path) -> None:
    # POLICY imports data.magtape.lib.messages; only the policy folder is given.
    write_tree(tmp_path, {"policy.rego": POLICY, "policy_test.rego": TESTS.split("test_this")[0]})
    code, out = run(tmp_path)
    assert (code, out) == (0, "1 passed, 0 failed\n")


def test_a_given_library_replaces_the_builtin_one(tmp_path: Path) -> None:
    # An edited copy of the library is tested as it is, not merged with the original.
    lib = write_tree(tmp_path, {"lib/" + f.name: f.read_text()
                                for f in (REPO / "policies/lib").iterdir()
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
    write_tree(tmp_path, {"image-tag/policy.rego": policy, "image-tag/policy_test.rego": tests})
    assert run(tmp_path) == (0, "2 passed, 0 failed\n")
    # ... and under OPA, the reference.
    reference = opa_test_results([tmp_path, *ruletest.library_files_to_add(
        ruletest.find_rego_files([tmp_path]))])
    assert list(reference.values()) == [True, True]


def test_verdicts_match_opa_test_on_the_shipped_policies() -> None:
    files, tests = ruletest.collect([str(REPO / "policies")])
    ours = {t.rule_path: r.passed for t, r in
            zip(tests, ruletest.run_tests(files, tests).results, strict=True)}
    reference = opa_test_results([REPO / "policies"])
    assert ours == reference
    assert len(ours) > 150 and all(ours.values())


def test_verdicts_match_opa_test_on_failing_tests(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS,
                     "x_test.rego": CONFLICT_TESTS})
    files, tests = ruletest.collect([str(tmp_path)])
    ours = {t.rule_path: r.passed for t, r in
            zip(tests, ruletest.run_tests(files, tests).results, strict=True)}
    # OPA gets the shared library the way `magtape test` adds it.
    reference = opa_test_results([tmp_path, *ruletest.library_files_to_add(
        ruletest.find_rego_files([tmp_path]))])
    assert ours == reference
    assert sorted(ours.values()) == [False, False, False, True]


def test_run_selects_tests_by_name_as_opa_does() -> None:
    code, out = run(REPO / "policies", verbose=True, run_filter=r"pdb\.test_integer")
    assert code == 0, out
    names = [line.removeprefix("PASS: ") for line in out.splitlines()[:-1]]
    assert names and all(".pdb.test_integer" in n for n in names)
    reference = opa_test_results([REPO / "policies"], "--run", r"pdb\.test_integer")
    assert {f"data.{n}" for n in names} == set(reference)


@pytest.mark.parametrize("regex, message", [
    ("(", "is not a regular expression"),
    ("no_such_test", "no test matches --run 'no_such_test'"),
])
def test_a_bad_or_empty_selection_exits_2(regex: str, message: str) -> None:
    code, out = run(REPO / "policies" / "pdb", run_filter=regex)
    assert code == 2 and message in out, out


def test_json_output(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS})
    code, out = run(tmp_path, output="json")
    assert code == 1
    doc = json.loads(out)
    assert doc["summary"] == {"total": 2, "passed": 1, "failed": 1}
    wrong = next(t for t in doc["tests"] if t["name"] == "test_this_one_is_wrong")
    assert wrong["package"] == "test.kubernetes.admission.sample"
    assert wrong["file"] == str(tmp_path / "sample" / "policy_test.rego")
    assert wrong["line"] == TESTS.splitlines().index("test_this_one_is_wrong if {") + 1
    assert wrong["passed"] is False and wrong["detail"]
    assert "coverage" not in doc


def test_junit_output_is_valid_junit(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS,
                     "x_test.rego": CONFLICT_TESTS})
    code, out = run(tmp_path, output="junit")
    assert code == 1
    schema = xmlschema.XMLSchema(str(REPO / "tests" / "schemas" / "junit.xsd"))
    schema.validate(out)
    doc = schema.to_dict(out)
    suites = {s["@name"]: s for s in doc["testsuite"]}
    assert set(suites) == {"test.kubernetes.admission.sample", "test.conflict"}
    assert (suites["test.conflict"]["@tests"], suites["test.conflict"]["@failures"]) == (2, 2)
    sample = suites["test.kubernetes.admission.sample"]
    failed = [c for c in sample["testcase"] if "failure" in c]
    assert [c["@name"] for c in failed] == ["test_this_one_is_wrong"]
    assert failed[0]["@file"] == str(tmp_path / "sample" / "policy_test.rego")


def test_coverage_per_policy_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY, "sample/policy_test.rego": TESTS})
    code, out = run(tmp_path, coverage=True, output="json")
    assert code == 1  # one of TESTS fails on purpose
    (entry,) = json.loads(out)["coverage"]  # the policy; tests and the added library left out
    assert entry["file"] == str(tmp_path / "sample" / "policy.rego")
    assert 0 < entry["covered"] <= entry["lines"] and entry["percent"] > 50

    # A rule no test reaches shows up as not covered.
    source = ("package kubernetes.admission.extra\nimport rego.v1\n\n"
              "unused if {\n\tinput.x == 1\n}\n")
    write_tree(tmp_path, {"sample/extra.rego": source})
    _, out = run(tmp_path, coverage=True)
    extra = next(line for line in out.splitlines() if "extra.rego" in line)
    assert re.fullmatch(r"coverage: .*extra\.rego: 0% \(no test evaluates it\)", extra), extra


def test_the_default_directory_is_the_current_one(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sample/policy.rego": POLICY,
                     "sample/policy_test.rego": TESTS.split("test_this")[0]})
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    proc = subprocess.run([sys.executable, "-m", "magtape", "test", "-o", "json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["summary"]["passed"] == 1


def test_missing_test_helpers_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed wheel ships the library without its *_test.rego helpers.
    lib = write_tree(tmp_path / "installed", {
        f.name: f.read_text() for f in (REPO / "policies/lib").glob("*.rego")
        if not f.name.endswith("_test.rego")})
    monkeypatch.setattr(ruletest, "builtin_library_files", lambda: sorted(lib.glob("*.rego")))
    write_tree(tmp_path / "mine", {"policy_test.rego": """package test.mine
import rego.v1

import data.test.magtape.fixtures

test_x if fixtures.namespace == "test1"
"""})
    code, out = run(tmp_path / "mine")
    assert code == 2
    assert "test.magtape.fixtures" in out and "copy policies/lib/fixtures_test.rego" in out
