"""`magtape check` on Kustomize directories and Helm charts: rendered, never read as files.

Real `kustomize build` / `kubectl kustomize` (tests/kustomizing.py finds it);
the checks run on what a cluster would receive, reported against the
kustomization, and a patch is never mistaken for an object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_tree
from kustomizing import path_with_kustomize, render
from magtape.check.render import KUSTOMIZATION_FILES
from magtape.cli import main

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx
"""
# Patches: fragments of the Deployment, each "missing" probes and resources.
SMP = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
JSON6902 = "- op: replace\n  path: /spec/replicas\n  value: 3\n"


@pytest.fixture(autouse=True)
def _kustomize_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with_kustomize(os.environ.get("PATH", "")))


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "magtape", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": os.environ["PATH"]})


def patch_files_of_this_repository() -> set[str]:
    """Every file a kustomization in this repository lists as a patch, repo-relative."""
    from magtape.check.render import patch_files

    found: set[str] = set()
    for name in KUSTOMIZATION_FILES:
        for k in REPO.glob(f"*/**/{name}"):
            if ".venv" not in k.parts and ".tools" not in k.parts:
                found |= {p.relative_to(REPO).as_posix() for p in patch_files(k)}
    return found


def test_overlays_and_base_are_checked_rendered_and_no_patch_as_an_object() -> None:
    patches = patch_files_of_this_repository()
    assert "overlays/production/slack-alerts.yaml" in patches  # what the test is about
    result = check("--deny-level", "HIGH", "-o", "json", "overlays", "base")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    objects = json.loads(result.stdout)["objects"]
    paths = {o["path"] for o in objects}
    assert paths == {"base/kustomization.yaml",
                     *(f"overlays/{o}/kustomization.yaml"
                       for o in ("airgapped", "production", "quickstart"))}
    assert not paths & patches
    assert all(o["line"] is None for o in objects)  # lines of the rendered stream mean nothing


def test_quickstart_is_checked_as_rendered_and_passes_at_deny_level_high() -> None:
    result = check("--deny-level", "HIGH", "-o", "json", "overlays/quickstart")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    objects = json.loads(result.stdout)["objects"]
    rendered = render(REPO / "overlays" / "quickstart")
    assert [(o["kind"], o["name"]) for o in objects] == \
        [(d["kind"], d["metadata"]["name"]) for d in rendered]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["verdict"] == "PASS"
    # The rendered object is the one checked: the overlay's image, not the base's.
    text = check("--deny-level", "HIGH", "overlays/quickstart")
    assert "PASS   Deployment magtape-system/magtape  (overlays/quickstart/kustomization.yaml#" \
        in text.stdout


def test_the_kustomization_file_names_its_directory() -> None:
    by_dir = check("-o", "json", "overlays/quickstart")
    by_file = check("-o", "json", "overlays/quickstart/kustomization.yaml")
    assert by_file.returncode == 0 and json.loads(by_file.stdout) == json.loads(by_dir.stdout)


APP = {
    "app/base/kustomization.yaml": "resources: [deployment.yaml]\n",
    "app/base/deployment.yaml": DEPLOYMENT,
    "app/overlay/kustomization.yaml": (
        "resources: [../base]\n"
        "patches:\n- path: replicas.yaml\n"
        "patchesStrategicMerge:\n- smp.yaml\n"
        "patchesJson6902:\n- target: {group: apps, version: v1, kind: Deployment, name: web}\n"
        "  path: json6902.yaml\n"),
    "app/overlay/replicas.yaml": SMP,
    "app/overlay/smp.yaml": SMP,
    "app/overlay/json6902.yaml": JSON6902,
    # A Component cannot be built alone: read file by file, without its patch.
    "app/component/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                         "kind: Component\nresources: [pod.yaml]\n"
                                         "patches: [{path: patch.yaml}]\n"),
    "app/component/patch.yaml": SMP,
    "app/component/pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: extra}\nspec:\n"
                              "  containers: [{name: a, image: nginx}]\n",
}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_patches_are_never_objects_whatever_the_path_given(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, jobs: str) -> None:
    root = write_tree(tmp_path, APP)
    code = main(["check", "-j", jobs, "--deny-level", "HIGH", "-o", "json", str(root / "app")])
    out, err = capsys.readouterr()
    assert code == 1, err  # the Deployment has no probes or resources
    doc = json.loads(out)
    got = sorted((Path(o["path"]).relative_to(root).as_posix(), o["kind"], o["name"])
                 for o in doc["objects"])
    assert got == [("app/base/kustomization.yaml", "Deployment", "web"),
                   ("app/component/pod.yaml", "Pod", "extra"),
                   ("app/overlay/kustomization.yaml", "Deployment", "web")]
    assert doc["skippedDocuments"] == {"Component": 1, "Kustomize patch": 1}
    # Named one by one: a patch is still a patch.
    for patch in ("replicas.yaml", "smp.yaml", "json6902.yaml"):
        code = main(["check", "--allow-empty", "-o", "json", str(root / "app/overlay" / patch)])
        out, err = capsys.readouterr()
        assert code == 0 and json.loads(out)["objects"] == [], patch
        assert "1 Kustomize patch" in err


def test_the_overlay_is_checked_with_its_patches_applied(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = write_tree(tmp_path, APP)
    fixed = DEPLOYMENT.replace("        image: nginx\n", (
        "        image: nginx\n"
        "        livenessProbe: {httpGet: {path: /, port: 80}}\n"
        "        readinessProbe: {httpGet: {path: /, port: 80}}\n"
        "        resources: {requests: {cpu: 10m, memory: 10Mi}, "
        "limits: {cpu: 100m, memory: 100Mi}}\n"))
    (root / "app/overlay/smp.yaml").write_text(fixed)  # the overlay adds what was missing
    code = main(["check", "--deny-level", "HIGH", str(root / "app/overlay")])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "PASS   Deployment default/web  (" in out


def test_without_kustomize_or_kubectl_the_error_names_the_fix(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    root = write_tree(tmp_path, APP)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["check", str(root / "app" / "base")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "a Kustomize directory; checking it renders it with `kustomize build` or " \
           "`kubectl kustomize`, and neither `kustomize` nor `kubectl` is on PATH" in err
    assert f"`kustomize build {root / 'app' / 'base'} | magtape check -`" in err


def test_a_kustomization_that_does_not_build_is_reported_with_kustomize_s_message(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"k/kustomization.yaml": "resources: [missing.yaml]\n"})
    code = main(["check", str(root / "k")])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"magtape check: {root / 'k'}: `" in err and "failed: " in err
    assert "missing.yaml" in err


def test_a_helm_chart_without_helm_names_the_fix(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        "chart/values.yaml": "replicas: 2\n",
        "chart/templates/deployment.yaml": "kind: Deployment\nmetadata:\n"
                                           "  name: {{ .Release.Name }}\n"})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["check", str(root)])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"{root / 'chart'}: a Helm chart; checking it renders it with `helm template`, " \
           "and `helm` is not on PATH: install Helm" in err
    assert f"`helm template {root / 'chart'} | magtape check -`" in err


def test_all_namespaces_without_the_cluster_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-A", "overlays/quickstart"]) == 2
    assert "--all-namespaces applies to --from-cluster only" in capsys.readouterr().err
