"""The Python dependency lock: one resolution, installed exactly, deciding over the registry.

Why it exists: CI went red on a fresh machine when a dependency released a new
version, because the development virtualenv was resolved at install time while
the image was locked. Every install now comes from hack/lock/*.txt (written
only by `make lock`, hack/lock.sh) with pip --require-hashes --no-deps. These
tests hold the three files to one resolution, to pyproject.toml, and to what
this virtualenv actually runs, and show that a newer release on an index the
installer reaches changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "hack" / "lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


class Pin:
    """One entry of a lock file: version, marker and accepted sha256 digests."""

    def __init__(self, line: str) -> None:
        spec, _, rest = line.partition(" --hash=")
        self.requirement = Requirement(spec.strip())
        (self.version,) = (s.version for s in self.requirement.specifier)
        self.hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", " --hash=" + rest))

    def applies(self) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate({**default_environment(), "extra": ""})


def read(name: str) -> dict[str, Pin]:
    text = (LOCKS / name).read_text().replace("\\\n", " ")
    pins = [Pin(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {canonicalize_name(p.requirement.name): p for p in pins}


@pytest.mark.parametrize("name", ["dev.txt", "runtime.txt", "build.txt"])
def test_every_entry_is_an_exact_version_with_hashes(name: str) -> None:
    pins = read(name)
    assert pins, f"hack/lock/{name} is empty: run `make lock`"
    for package, pin in pins.items():
        (spec,) = pin.requirement.specifier
        assert spec.operator == "==", f"{package} in {name} is not pinned exactly"
        assert pin.hashes, f"{package} in {name} has no sha256: run `make lock`"


@pytest.mark.parametrize("name", ["runtime.txt", "build.txt"])
def test_runtime_and_build_are_views_of_the_one_dev_resolution(name: str) -> None:
    dev = read("dev.txt")
    for package, pin in read(name).items():
        assert package in dev, f"{package} is in {name} but not in dev.txt: run `make lock`"
        assert (pin.version, pin.hashes) == (dev[package].version, dev[package].hashes), (
            f"{package} differs between {name} and dev.txt: run `make lock`")


def test_the_lock_satisfies_pyproject() -> None:
    """A changed pyproject.toml without `make lock` fails here, naming the package."""
    wanted = [("runtime.txt", raw) for raw in PYPROJECT["dependencies"]]
    wanted += [("dev.txt", raw) for raw in PYPROJECT["optional-dependencies"]["dev"]]
    for name, raw in wanted:
        req = Requirement(raw)
        pins = read(name)
        package = canonicalize_name(req.name)
        assert package in pins, f"{req.name} is not in hack/lock/{name}: run `make lock`"
        assert req.specifier.contains(pins[package].version, prereleases=True), (
            f"hack/lock/{name} pins {req.name}=={pins[package].version}, pyproject wants "
            f"{req}: run `make lock`")


def runtime_closure() -> set[str]:
    """pyproject's runtime dependencies and theirs, from the installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(raw) for raw in PYPROJECT["dependencies"]]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in seen:
            seen.add(name)
            todo += [Requirement(r) for r in metadata.distribution(req.name).requires or []]
    return seen


def test_runtime_lock_is_exactly_the_runtime_closure() -> None:
    """Nothing stale (a dropped dependency) in what the image installs, nothing missing."""
    locked = {name for name, pin in read("runtime.txt").items() if pin.applies()}
    assert locked == runtime_closure(), "run `make lock`"


def test_this_virtualenv_runs_exactly_the_locked_versions() -> None:
    """What the tests ran against is what the lock says (and so what the image gets)."""
    for package, pin in read("dev.txt").items():
        if pin.applies():
            assert metadata.version(package) == pin.version, (
                f"{package} {metadata.version(package)} is installed, the lock says "
                f"{pin.version}: run `make install`")


def _wheel(directory: Path, name: str, version: str) -> None:
    """A minimal, installable pure-Python wheel: a 'new release' on a reachable index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)


def _chosen(args: list[str]) -> dict[str, str]:
    """name -> version pip would install (a dry run; nothing changes here)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "--report", "-",
         *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}


def test_a_newer_release_on_the_index_changes_nothing(tmp_path: Path) -> None:
    """Simulates the failure this lock fixes: idna released a version newer than the lock's.

    Unlocked, pip takes the new release (so the simulation is real); from the lock
    line, exactly the locked version and file are installed.
    """
    pin = read("runtime.txt")["idna"]
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "idna", "99.0")
    assert _chosen(["--no-index", "--find-links", str(index), "idna"]) == {"idna": "99.0"}
    locked = tmp_path / "requirements.txt"
    locked.write_text(f"idna=={pin.version} " + " ".join(f"--hash=sha256:{h}" for h in pin.hashes))
    chosen = _chosen(["--require-hashes", "--find-links", str(index), "-r", str(locked)])
    assert chosen == {"idna": pin.version}
