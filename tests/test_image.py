"""The container image, as far as it can be checked without a Docker engine.

Why it exists: the image is built from the wheel, so what the wheel holds is
what the cluster runs. These tests build the wheel exactly as the Dockerfile's
build stage does (`pip wheel --no-deps .`), check that the built-in policies
are inside it and no tests or samples are, and run `magtape check` from the
unpacked wheel alone to prove the packaged policies work. A static reading
of the Dockerfile and .dockerignore then holds them to the image contract:
multi-stage, slim Python 3.12, a fixed numeric non-root user, the `magtape`
entrypoint, and a build context that carries what the build copies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
PACKAGED = "magtape/builtin_policies/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: hatchling comes from the dev dependencies, so no
    # network is needed; the Dockerfile builds with isolation, same backend.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--wheel-dir", str(out), str(REPO)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("magtape-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    return target


def _policy_sources() -> Iterator[Path]:
    policies = REPO / "policies"
    for path in sorted(policies.rglob("*.rego")):
        rel = path.relative_to(policies)
        if not path.name.endswith("_test.rego") and not any(
                p.startswith((".", "_")) for p in rel.parts):
            yield rel


def test_wheel_carries_every_built_in_policy(names: list[str]) -> None:
    expected = {PACKAGED + rel.as_posix() for rel in _policy_sources()}
    assert expected, "no policies in policies/"
    assert expected <= set(names), sorted(expected - set(names))
    folders = {p.parent.name for p in (REPO / "policies").glob("*/policy.rego")}
    assert {n.split("/")[2] for n in names if n.endswith("/policy.rego")} == folders


def test_wheel_carries_no_tests_samples_or_caches(names: list[str]) -> None:
    unwanted = [n for n in names if n.endswith("_test.rego") or "/samples/" in n
                or "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "test/"))
                or "conftest" in n]
    assert unwanted == []


def test_wheel_carries_the_package_and_its_console_script(names: list[str],
                                                          unpacked: Path) -> None:
    assert "magtape/__init__.py" in names and "magtape/cli.py" in names
    assert "magtape/py.typed" in names
    entry_points = next(unpacked.glob("magtape-*.dist-info/entry_points.txt")).read_text()
    assert re.search(r"^magtape\s*=\s*magtape\.cli:main$", entry_points, re.M), entry_points


def test_packaged_policies_work_on_their_own(unpacked: Path) -> None:
    """`magtape check` from the unpacked wheel uses the policies inside it."""
    deployment = REPO / "testing" / "deployments" / "test-deploy02.yaml"
    manifest = deployment.read_text() if deployment.is_file() else _privileged_deployment()
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    env.pop("MAGTAPE_POLICY_DIRS", None)
    where = subprocess.run(
        [sys.executable, "-c", "import magtape, magtape.engine.sources as s; "
         "print(magtape.__file__); print(s.builtin_policy_dir())"],
        capture_output=True, text=True, env=env, cwd=unpacked, check=True).stdout.split()
    assert all(Path(p).is_relative_to(unpacked) for p in where), where
    result = subprocess.run(
        [sys.executable, "-m", "magtape", "check", "--deny-level", "LOW", "--output", "json",
         "-"], input=manifest, capture_output=True, text=True, env=env, cwd=unpacked,
        check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MT2001" in json.dumps(json.loads(result.stdout))


def test_wheel_carries_the_page_templates_and_renders_html_from_them(names: list[str],
                                                                    unpacked: Path) -> None:
    """The HTML report and the page render from templates that are package data."""
    templates = REPO / "app" / "magtape" / "ui" / "templates"
    for path in templates.iterdir():
        assert f"magtape/ui/templates/{path.name}" in names, path.name
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    result = subprocess.run(
        [sys.executable, "-m", "magtape", "check", "--output", "html", "-"],
        input=_privileged_deployment(), capture_output=True, text=True, env=env, cwd=unpacked,
        check=False)
    assert result.returncode == 1, result.stderr
    assert "<style>" in result.stdout and "Deployment test1/privileged" in result.stdout


def _privileged_deployment() -> str:
    return """apiVersion: apps/v1
kind: Deployment
metadata: {name: privileged, namespace: test1}
spec:
  selector: {matchLabels: {app: privileged}}
  template:
    metadata: {labels: {app: privileged}}
    spec:
      containers:
        - name: privileged
          image: busybox:1.36
          securityContext: {privileged: true}
"""


# --------------------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_dockerfile_is_multi_stage_on_slim_python_3_12() -> None:
    args = dict(a.split("=", 1) for i, a in _instructions() if i == "ARG" and "=" in a)
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.12-slim(-\w+)?", image), image


def test_final_stage_runs_as_a_fixed_non_root_user_with_the_magtape_entrypoint() -> None:
    final = _stages()[-1]
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000, f"USER must be a numeric non-root UID: {users}"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    entrypoint = [a for i, a in final if i == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["magtape"], "exec-form entrypoint"
    # The final stage installs nothing but runtime libraries (when a native
    # wheel needs one the base lacks: no compiler, no apt lists left) and runs
    # the smoke test; the venv comes from the build stage.
    runs = [a for i, a in final if i == "RUN"]
    for install in [r for r in runs if "apt-get install" in r]:
        assert "rm -rf /var/lib/apt/lists/*" in install, install
        packages = [w for w in install.split("apt-get install", 1)[1].split("&&")[0].split()
                    if not w.startswith("-")]
        assert packages and all(p.startswith("lib") for p in packages), packages
    assert not re.search(r"\b(gcc|g\+\+|make|build-essential|python3-dev|pip install)\b",
                         " ".join(runs)), runs
    assert any("smoke.py" in r for r in runs), "the final stage must run the smoke test"
    copies = [a for i, a in final if i in ("COPY", "ADD")]
    assert any(c.startswith("--from=build /opt/magtape ") for c in copies), copies
    assert [c for c in copies if not c.startswith("--from=")] == [
        "hack/image_smoke.py /usr/local/lib/magtape/smoke.py"], copies
    env = " ".join(a for i, a in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes on a read-only root"
    assert "HOME=/tmp" in env


def test_build_context_carries_what_the_build_copies() -> None:
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*", "the context is an allow-list"

    def included(path: str) -> bool:
        keep = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    sources = [a.split()[:-1] for i, a in _instructions() if i == "COPY"
               and not a.startswith("--from=")]
    for group in sources:
        for source in group:
            assert included(source.rstrip("/")), f"{source} is copied but .dockerignore drops it"
            assert (REPO / source).exists(), f"{source} is copied but does not exist"
    for secretish in (".git/config", ".venv/bin/python", "tests/conftest.py", ".tools/x"):
        assert not included(secretish), secretish


def test_image_smoke_test_passes_on_the_development_install() -> None:
    """The smoke test the image runs at build time (and `make image-test` inside it)."""
    result = subprocess.run([sys.executable, str(REPO / "hack" / "image_smoke.py")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test passed" in result.stdout


def test_quickstart_uses_the_image_make_image_builds() -> None:
    """`make image` then `kubectl apply -k overlays/quickstart` works from a clean clone."""
    import tomllib

    import yaml

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    quickstart = yaml.safe_load((REPO / "overlays/quickstart/kustomization.yaml").read_text())
    (image,) = [i for i in quickstart["images"] if i["name"] == "ghcr.io/tmobile/magtape"]
    assert f"{image['newName']}:{image['newTag']}" == f"localhost/magtape:{version}"
    script = (REPO / "hack" / "image.sh").read_text()
    assert 'IMAGE=${IMAGE:-localhost/magtape:$VERSION}' in script
