"""Meta-test: every folder in policies/ is a complete, well-formed policy.

A policy folder (every one but ``lib``) must hold ``policy.rego``,
``policy_test.rego``, at least one ``samples/allowed-*.yaml`` and one
``samples/denied-*.yaml`` (each stating ``# expect: ...``), and a README, and
its ``policy_metadata`` and ``matches`` must follow the contract in
docs/policies.md. Each failure names the folder, so a new policy cannot ship
half-done. The whole tree passes `opa check --strict` (OPA is the reference).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import regorus

from conftest import REPO
from opasupport import OPA

POLICIES = REPO / "policies"
FOLDERS = sorted(p.name for p in POLICIES.iterdir() if p.is_dir() and p.name != "lib")
LIBRARY = sorted(f for f in (POLICIES / "lib").glob("*.rego") if not f.name.endswith("_test.rego"))

PACKAGE_RE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
EXPECT_RE = re.compile(r"^#\s*expect:\s*(none|MT\d{4}(\s*,\s*MT\d{4})*)\s*$", re.MULTILINE)


def package_of(path: Path) -> str:
    match = PACKAGE_RE.search(path.read_text(encoding="utf-8"))
    assert match, f"{path.relative_to(REPO)} has no package clause"
    return match.group(1)


def metadata_of(folder: str) -> Any:
    """``policy_metadata`` as MagTape's engine (regorus) sees it, with the shared library."""
    engine = regorus.Engine()
    for f in [*LIBRARY, POLICIES / folder / "policy.rego"]:
        engine.add_policy(str(f.relative_to(REPO)), f.read_text(encoding="utf-8"))
    package = package_of(POLICIES / folder / "policy.rego")
    meta = engine.eval_rule(f"data.{package}.policy_metadata")
    assert meta is not None, f"{folder}: policy.rego defines no policy_metadata"
    if isinstance(meta, dict) and isinstance(meta.get("targets"), set):
        meta["targets"] = sorted(meta["targets"])  # a set in Rego, as JSON gives it
    return meta


@pytest.fixture(scope="module")
def all_metadata() -> dict[str, Any]:
    return {folder: metadata_of(folder) for folder in FOLDERS
            if (POLICIES / folder / "policy.rego").is_file()}


def test_the_twelve_catalogue_policies_are_present() -> None:
    assert set(FOLDERS) >= {
        "liveness-probe", "readiness-probe", "resource-limits", "resource-requests", "pdb",
        "port-name-mismatch", "singleton-pod", "host-port", "emptydir", "host-path",
        "privileged-pod", "node-port-range",
    }


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_has_every_part(folder: str) -> None:
    root = POLICIES / folder
    for name in ("policy.rego", "policy_test.rego", "README.md"):
        assert (root / name).is_file(), f"policies/{folder} lacks {name}"
    assert (root / "README.md").read_text(encoding="utf-8").strip(), \
        f"policies/{folder}/README.md is empty"
    tests = (root / "policy_test.rego").read_text(encoding="utf-8")
    assert re.search(r"^test_\w+", tests, re.MULTILINE), \
        f"policies/{folder}/policy_test.rego has no test_* rule"
    for prefix in ("allowed", "denied"):
        assert list((root / "samples").glob(f"{prefix}-*.yaml")), \
            f"policies/{folder} lacks a samples/{prefix}-*.yaml"


@pytest.mark.parametrize("folder", FOLDERS)
def test_samples_state_what_they_expect(folder: str, all_metadata: dict[str, Any]) -> None:
    errcode = all_metadata[folder]["errcode"]
    for sample in sorted((POLICIES / folder / "samples").glob("*.yaml")):
        where = f"policies/{folder}/samples/{sample.name}"
        match = EXPECT_RE.search(sample.read_text(encoding="utf-8"))
        assert match, f"{where}: no '# expect: <IDs or none>' comment line"
        ids = {i.strip() for i in match.group(1).split(",")} - {"none"}
        if sample.name.startswith("denied-"):
            assert errcode in ids, f"{where}: a denied sample must raise {errcode}"
        else:
            assert sample.name.startswith("allowed-"), f"{where}: name it allowed-* or denied-*"
            assert errcode not in ids, f"{where}: an allowed sample must not raise {errcode}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_metadata_is_well_formed(folder: str, all_metadata: dict[str, Any]) -> None:
    meta = all_metadata[folder]
    assert isinstance(meta, dict), f"policies/{folder}: policy_metadata must be an object"
    assert meta.get("name") == folder, f"policies/{folder}: name must be {folder!r}"
    assert meta.get("severity") in ("LOW", "MED", "HIGH"), \
        f"policies/{folder}: severity must be LOW, MED or HIGH, got {meta.get('severity')!r}"
    assert re.fullmatch(r"MT\d{4}", str(meta.get("errcode"))), \
        f"policies/{folder}: errcode must look like MT1234, got {meta.get('errcode')!r}"
    targets = meta.get("targets")
    assert isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets), \
        f"policies/{folder}: targets must be a non-empty set of kinds, got {targets!r}"
    expected_package = "kubernetes.admission." + folder.replace("-", "_")
    assert package_of(POLICIES / folder / "policy.rego") == expected_package, \
        f"policies/{folder}/policy.rego: package must be {expected_package}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_errcode_is_unique(folder: str, all_metadata: dict[str, Any]) -> None:
    errcode = all_metadata[folder]["errcode"]
    others = [f for f, m in all_metadata.items() if f != folder and m["errcode"] == errcode]
    assert not others, f"policies/{folder}: errcode {errcode} is also used by {others}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_readme_names_the_check(folder: str, all_metadata: dict[str, Any]) -> None:
    readme = (POLICIES / folder / "README.md").read_text(encoding="utf-8")
    errcode = all_metadata[folder]["errcode"]
    assert errcode in readme, f"policies/{folder}/README.md does not mention {errcode}"
    docs = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    assert f"../policies/{folder}/README.md" in docs, \
        f"docs/policies.md does not link policies/{folder}/README.md"


@pytest.mark.parametrize("folder", FOLDERS)
def test_policy_defines_matches(folder: str) -> None:
    # Applicability is `targets` and `matches` in every engine; the OPA
    # entrypoint cannot tell a missing `matches` from a false one.
    source = (POLICIES / folder / "policy.rego").read_text(encoding="utf-8")
    assert re.search(r"^matches\b", source, re.MULTILINE), \
        f"policies/{folder}/policy.rego defines no `matches` rule"


def test_opa_check_strict_passes() -> None:
    proc = subprocess.run([str(OPA), "check", "--strict", "--ignore", "*.yaml", str(POLICIES)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
