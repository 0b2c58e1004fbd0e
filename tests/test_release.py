"""hack/release.sh: a version bump misses no place, and release manifests pin every image.

The bump runs on a copy of this repository (tracked and new files, as git
sees them): afterwards the old version is gone from every place the script
owns, the new one is in each, and the CHANGELOG has the release's section. A
MagTape version reference the script does not own, or an owned file without
the version, makes it fail naming the file. The manifests are rendered from
this repository's overlays with a digest given as a parameter, as
.github/workflows/release.yml does, and every image must be pinned by digest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from kustomizing import path_with_kustomize
from magtape import project

OLD = project.VERSION
NEW = "3.99.1"
DIGEST = "sha256:" + "ab" * 32
SCRIPT = REPO / "hack" / "release.sh"


def env() -> dict[str, str]:
    return {**os.environ, "PATH": path_with_kustomize(os.environ.get("PATH", ""))}


def owned() -> list[str]:
    text = SCRIPT.read_text()
    block = re.search(r"^OWNED=\(\n(.*?)^\)", text, re.S | re.M)
    assert block
    return block.group(1).split()


def copy_of_repository(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    return dest


def git(where: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=where, check=True, capture_output=True)


def release(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "hack/release.sh", *args], cwd=where, capture_output=True,
                          text=True, timeout=300, env=env())


def whole(version: str) -> re.Pattern[str]:
    return re.compile(rf"(^|[^0-9.]){re.escape(version)}([^0-9]|$)", re.M)


@pytest.fixture(scope="module")
def bumped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_of_repository(tmp_path_factory.mktemp("repo"))
    result = release(copy, NEW)
    assert result.returncode == 0, result.stderr
    return copy


def test_the_bump_leaves_the_old_version_in_no_place_it_owns(bumped: Path) -> None:
    places = owned()
    assert {"pyproject.toml", "app/magtape/project.py", "base/deployment.yaml",
            "overlays/quickstart/kustomization.yaml", "docs/install.md",
            "docs/examples/argocd-application.yaml",
            "docs/examples/flux-kustomization.yaml"} <= set(places)
    for rel in places:
        text = (bumped / rel).read_text()
        assert not whole(OLD).search(text), f"{rel} still holds {OLD}"
        assert whole(NEW).search(text), f"{rel} does not hold {NEW}"
    # Every MagTape version reference in the tree moved (tests hold fixtures).
    grep = subprocess.run(["git", "grep", "-nE", rf"magtape[:@]v?{re.escape(OLD)}|ref=v"
                           rf"{re.escape(OLD)}|targetRevision: v{re.escape(OLD)}",
                           "--", ".", ":!CHANGELOG.md", ":!tests/"],
                          cwd=bumped, capture_output=True, text=True)
    assert grep.stdout == ""


def test_the_bump_opens_the_changelog_section_and_keeps_the_history(bumped: Path) -> None:
    changelog = (bumped / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[Unreleased\]\n\n## \[{re.escape(NEW)}\] - \d{{4}}-\d\d-\d\d$",
                     changelog, re.M)
    assert f"## [{OLD}] - " in changelog  # history stays
    assert f"[Unreleased]: {project.REPOSITORY}/compare/v{NEW}...HEAD" in changelog
    assert f"[{NEW}]: {project.REPOSITORY}/compare/v{OLD}...v{NEW}" in changelog


def test_the_bumped_copy_agrees_with_itself(bumped: Path) -> None:
    """The copy's package names the new version, and so do its links."""
    code = ("import sys; sys.path.insert(0, 'app'); from magtape import project; "
            "print(project.VERSION, project.DOCS_URL)")
    out = subprocess.run([sys.executable, "-c", code], cwd=bumped, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [NEW, f"{project.REPOSITORY}/blob/v{NEW}/policies"]
    pyproject = (bumped / "pyproject.toml").read_text()
    assert f'version = "{NEW}"' in pyproject
    # The alerts' runbook links name the release: the bumped rules are what
    # hack/alerts.py generates from the bumped version.
    check = subprocess.run([sys.executable, "hack/alerts.py", "--check"], cwd=bumped,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "app"})
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"/blob/v{NEW}/docs/runbooks/" in (bumped / "dashboards/magtape-alerts.yml").read_text()


def test_a_version_place_the_script_does_not_own_fails_the_bump(tmp_path: Path) -> None:
    copy = copy_of_repository(tmp_path)
    (copy / "docs" / "extra.md").write_text(f"image: {project.IMAGE}:{OLD}\n")
    git(copy, "add", "docs/extra.md")
    result = release(copy, NEW)
    assert result.returncode == 1
    assert f"{OLD} is referenced outside the places" in result.stderr
    assert f"docs/extra.md:1:image: {project.IMAGE}:{OLD}" in result.stderr


def test_an_owned_place_without_the_version_fails_the_bump(tmp_path: Path) -> None:
    copy = copy_of_repository(tmp_path)
    readme = copy / "README.md"
    readme.write_text(whole(OLD).sub(r"\g<1>X.Y.Z\g<2>", readme.read_text()))
    result = release(copy, NEW)
    assert result.returncode == 1
    assert f"README.md does not hold the version {OLD}: update OWNED" in result.stderr


@pytest.mark.parametrize(("version", "message"), [
    ("3.1", "is not a SemVer version"), ("v3.1.0", "is not a SemVer version"),
    (OLD, f"the version is {OLD} already")])
def test_bad_versions_are_refused(tmp_path: Path, version: str, message: str) -> None:
    result = release(REPO, version)  # refused before anything is written
    assert result.returncode == 1 and message in result.stderr


def test_release_manifests_pin_every_image_by_digest(tmp_path: Path) -> None:
    result = release(REPO, "manifests", DIGEST, str(tmp_path))
    assert result.returncode == 0, result.stderr
    overlays = sorted(p.name for p in (REPO / "overlays").iterdir() if p.is_dir())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"magtape-{o}.yaml" for o in overlays]
    for overlay in overlays:
        rendered = tmp_path / f"magtape-{overlay}.yaml"
        images = []
        for doc in yaml.safe_load_all(rendered.read_text()):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
            for key in ("initContainers", "containers"):
                images += [c["image"] for c in spec.get(key, [])]
        assert images, overlay
        unpinned = [i for i in images if not re.search(r"@sha256:[0-9a-f]{64}$", i)]
        assert unpinned == [], f"{overlay}: {unpinned}"
        ours = {i for i in images if i.split("@")[0].rsplit(":", 1)[0].endswith("/magtape")}
        registry = ("registry.example.internal/magtape/magtape" if overlay == "airgapped"
                    else project.IMAGE)  # the quickstart's release: the published image
        assert ours == {f"{registry}:{OLD}@{DIGEST}"}, overlay
        # MagTape's own release manifests pass its own checks.
        check = subprocess.run([sys.executable, "-m", "magtape", "check", "--deny-level",
                                "HIGH", str(rendered)], capture_output=True, text=True,
                               timeout=300)
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr


def test_release_manifests_refuse_what_is_not_a_digest(tmp_path: Path) -> None:
    result = release(REPO, "manifests", "latest", str(tmp_path))
    assert result.returncode == 1 and "latest is not an image digest" in result.stderr
