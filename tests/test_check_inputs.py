"""`magtape check` pointed at a real repository: what is read, what is skipped, and why."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_tree
from kustomizing import path_with_kustomize
from magtape.check.manifests import read_manifests
from magtape.cli import main

POD = ("apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: a}\nspec:\n"
       "  containers:\n  - {name: app, image: nginx, securityContext: {privileged: true}}\n")


@pytest.fixture(autouse=True)
def _kustomize_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kustomize directories are rendered: with the kustomize the tests use."""
    monkeypatch.setenv("PATH", path_with_kustomize(os.environ.get("PATH", "")))


REPOSITORY = {
    "k8s/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\n"
                              "kind: Kustomization\nresources: [pod.yaml]\n",
    "k8s/component/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                        "kind: Component\n",
    "k8s/pod.yaml": POD % "web",
    "components/probes/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                            "kind: Component\npatches: [{path: patch.yaml}]\n",
    "components/probes/patch.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
    "values.yaml": "replicas: 2\nimage: {repository: nginx}\n",
    "kubeconfig.yaml": "apiVersion: v1\nkind: Config\nclusters: []\n",
    "kind-cluster.yaml": "apiVersion: kind.x-k8s.io/v1alpha4\nkind: Cluster\n",
    ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
    "docs/openapi.json": '{"openapi": "3.0.0"}',
    "list.yaml": "- a\n- b\n",
    "empty.yaml": "# nothing here\n",
}


def test_a_repository_is_read_without_its_tool_configs(tmp_path: Path) -> None:
    write_tree(tmp_path, REPOSITORY)
    (tmp_path / "docs" / "loop").symlink_to(tmp_path, target_is_directory=True)  # not followed
    found = read_manifests([str(tmp_path)], io.StringIO())
    # k8s/ is rendered (its pod reported against the kustomization, without a
    # line); the Component is read file by file, without its patch.
    assert [(Path(m.path).relative_to(tmp_path).as_posix(), m.line) for m in found.manifests] \
        == [("k8s/kustomization.yaml", None)]
    assert dict(found.skipped) == {
        "Component": 1, "Config": 1, "Cluster": 1, "Kustomize patch": 1,
        # values.yaml, docs/openapi.json; .github is hidden
        "without apiVersion/kind": 2,
        "not a mapping": 1,  # list.yaml
    }


def test_skipped_documents_are_counted_on_stderr(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code = main(["check", str(write_tree(tmp_path, REPOSITORY))])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith("DENIED Pod a/web")
    assert "magtape check: skipped 7 non-Kubernetes documents (1 Cluster, 1 Component, " \
           "1 Config, 1 Kustomize patch, 1 not a mapping, 2 without apiVersion/kind)" in err
    assert "7 non-Kubernetes documents left out" in out


def test_ignore_globs_and_the_ignore_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"apps/web.yaml": POD % "web", "apps/web-test.yaml": POD % "web-test",
                    "fixtures/bad.yaml": POD % "bad", "apps/vendor/x.yaml": POD % "x"})
    paths = [str(tmp_path)]

    def names(ignore: list[str]) -> list[str]:
        return [m.name for m in read_manifests(paths, io.StringIO(), ignore).manifests]

    assert names([]) == ["web-test", "web", "x", "bad"]
    assert names(["fixtures"]) == ["web-test", "web", "x"]  # a directory, by relative path
    assert names(["*-test.yaml", "apps/vendor/"]) == ["web", "bad"]  # by name; trailing /
    (tmp_path / ".magtapeignore").write_text("# test fixtures\nfixtures\n\n*-test.yaml\n")
    assert names([]) == ["web", "x"]
    assert names(["x.yaml"]) == ["web"]  # both apply


def test_ignore_flag_is_repeatable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_tree(tmp_path, {"a.yaml": POD % "a", "b.yaml": POD % "b", "c.yaml": POD % "c"})
    code = main(["check", "-o", "json", "--ignore", "a.yaml", "--ignore", "c.*",
                 str(tmp_path)])
    objects = json.loads(capsys.readouterr().out)["objects"]
    assert code == 1 and [o["name"] for o in objects] == ["b"]


def _item(doc: str) -> str:
    """``doc`` as an element of a YAML sequence."""
    return "- " + doc.rstrip("\n").replace("\n", "\n  ") + "\n"


def test_json_and_multi_document_line_numbers(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "a.json": '{\n  "apiVersion": "v1", "kind": "Pod",\n  "metadata": {"name": "j"}\n}\n',
        "b.yaml": "# header\n" + POD % "one" + "---\n# two\n" + POD % "two",
        "list.yaml": "apiVersion: v1\nkind: List\nitems:\n"
                     + "".join(_item(POD % n) for n in ("i0", "i1")),
    })
    found = read_manifests([str(tmp_path)], io.StringIO())
    got = [(Path(m.path).name, m.index, m.line, m.item, m.name) for m in found.manifests]
    assert got == [("a.json", 1, 1, None, "j"),
                   ("b.yaml", 1, 2, None, "one"), ("b.yaml", 2, 10, None, "two"),
                   ("list.yaml", 1, 4, 0, "i0"), ("list.yaml", 1, 10, 1, "i1")]


def test_this_repository_passes_with_skipped_counts() -> None:
    """`magtape check .` here: the kustomizations rendered, the Components read without
    their patches, dashboards and configs skipped; exit 0."""
    out = subprocess.run([sys.executable, "-m", "magtape", "check", "-o", "json", "."],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    summary = json.loads(out.stdout)["summary"]
    skipped = json.loads(out.stdout)["skippedDocuments"]
    assert summary["denied"] == 0 and summary["skipped"] > 0 and summary["passed"] > 0
    assert skipped["Component"] >= 5 and skipped["Kustomize patch"] >= 3
    assert skipped["without apiVersion/kind"] >= 3
    paths = {o["path"] for o in json.loads(out.stdout)["objects"]}
    assert {f"overlays/{o}/kustomization.yaml" for o in ("quickstart", "production")} <= paths
    assert not any(p.startswith(("overlays/", "base/")) and not p.endswith("kustomization.yaml")
                   for p in paths)
    assert "non-Kubernetes documents" in out.stderr


def test_input_size_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from magtape.check import manifests

    monkeypatch.setattr(manifests, "MAX_FILE_BYTES", 1024)
    with pytest.raises(manifests.InputError, match="<stdin>: more than"):
        read_manifests(["-"], io.StringIO("#" * 1025))
    (tmp_path / "big.yaml").write_text("#" * 1025)
    with pytest.raises(manifests.InputError, match=r"big\.yaml: larger than"):
        read_manifests([str(tmp_path)], io.StringIO())
    assert read_manifests(["-"], io.StringIO(POD % "ok")).manifests


def test_the_pre_commit_hook_runs_on_staged_files(tmp_path: Path) -> None:
    """The hook's entry, given file names as pre-commit passes them."""
    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "magtape-check" and hook["language"] == "python"
    assert set(hook["types_or"]) == {"yaml", "json"}
    program, *args = hook["entry"].split()
    assert program == "magtape"
    files = write_tree(tmp_path, {
        "ok.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        "ci.yaml": "on: push\n", "bad.yaml": POD % "bad"})

    def hook_run(*names: str) -> int:
        return subprocess.run([sys.executable, "-m", "magtape", *args,
                               *(str(files / n) for n in names)],
                              capture_output=True, timeout=120).returncode

    assert hook_run("ok.yaml", "ci.yaml") == 0
    assert hook_run("ci.yaml") == 0  # nothing to check in this commit
    assert hook_run("ok.yaml", "bad.yaml") == 1
