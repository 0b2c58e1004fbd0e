"""Kustomize directories and Helm charts, rendered for ``magtape check``.

A Kustomize directory is not a set of objects: its patches are fragments
(a strategic-merge patch of a Deployment has no probes or resources of its
own), its generators make ConfigMaps no file holds, and its transformers set
names, namespaces and images. What a cluster receives is ``kustomize build``'s
output, so that is what ``magtape check`` checks; each rendered object is
reported against the kustomization file (``overlays/x/kustomization.yaml#3``:
the third rendered document).

The rules (docs/ci.md, "Kustomize and Helm"):

- a directory holding a kustomization (``kustomization.yaml``/``.yml``/
  ``Kustomization``) is rendered as a whole and its files are not read one by
  one; nor are its subdirectories (its resources, when it lists them);
- a Kustomize *Component* cannot be built on its own: its directory is read
  file by file, without the files it lists as patches;
- a file that any kustomization met on the way lists as a patch (``patches``,
  ``patchesStrategicMerge``, ``patchesJson6902``) is never checked as an
  object, also when it is named on the command line;
- a Helm chart directory (``Chart.yaml``) is rendered with ``helm template``.

The renderers are the user's own tools, found on ``PATH``: ``kustomize build``
or else ``kubectl kustomize``, and ``helm``. Without them the error says what
to install, or how to render by hand and pipe the result in.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CHART_FILE = "Chart.yaml"
# Rendering a large overlay takes seconds; a hung remote base must not hang CI.
RENDER_TIMEOUT_SECONDS = 300.0
MAX_STDERR_CHARS = 2000


class RenderError(ValueError):
    """A directory cannot be rendered; the message says why and what to do."""


def kustomization_in(directory: Path) -> Path | None:
    """The kustomization file of ``directory``, or None."""
    for name in KUSTOMIZATION_FILES:
        f = directory / name
        if f.is_file():
            return f
    return None


def is_rendered_name(name: str) -> bool:
    """Whether objects attributed to file ``name`` were rendered from it.

    A kustomization or Chart.yaml holds no objects itself, so an object
    reported against one was rendered: its line in the rendered stream is not
    a line of that file, and reports leave the line out.
    """
    return Path(name).name in (*KUSTOMIZATION_FILES, CHART_FILE)


def read_kustomization(f: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RenderError(f"{f}: cannot read the kustomization: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def is_component(kustomization: dict[str, Any]) -> bool:
    return str(kustomization.get("kind", "")) == "Component"


def patch_files(f: Path, kustomization: dict[str, Any] | None = None) -> set[Path]:
    """The files kustomization ``f`` lists as patches, resolved (inline patches have none)."""
    doc = read_kustomization(f) if kustomization is None else kustomization
    base = f.parent
    listed: list[Any] = []
    for key in ("patches", "patchesJson6902"):
        listed.extend(p.get("path") for p in _list(doc.get(key)) if isinstance(p, dict))
    # patchesStrategicMerge: each entry is a file name, or an inline patch.
    listed.extend(p for p in _list(doc.get("patchesStrategicMerge"))
                  if isinstance(p, str) and "\n" not in p)
    return {(base / p).resolve() for p in listed if isinstance(p, str) and p}


def patches_below(roots: Iterable[Path]) -> set[Path]:
    """Every file that a kustomization in or below ``roots`` lists as a patch.

    The kustomizations of the parent directory of a root are read too, so a
    patch named on the command line (``check overlays/prod/patch.yaml``) is
    recognised.
    """
    found: set[Path] = set()
    seen: set[Path] = set()
    for root in roots:
        dirs = [root.parent] if root.is_file() else [root, *_subdirs(root)]
        for d in dirs:
            k = kustomization_in(d)
            if k is not None and k.resolve() not in seen:
                seen.add(k.resolve())
                try:
                    found |= patch_files(k)
                except RenderError:
                    continue  # reported when the directory is rendered, or read
    return found


def render_kustomization(directory: Path) -> str:
    """``kustomize build directory`` (or ``kubectl kustomize``): the rendered YAML stream."""
    command = _kustomize_command()
    if command is None:
        raise RenderError(
            f"{directory}: a Kustomize directory; checking it renders it with `kustomize "
            "build` or `kubectl kustomize`, and neither `kustomize` nor `kubectl` is on PATH: "
            "install one of them, or render it yourself and pipe it in: "
            f"`kustomize build {directory} | magtape check -`")
    return _run([*command, str(directory)], directory, " ".join(command[-2:]))


def render_chart(directory: Path) -> str:
    """``helm template directory``: the chart rendered with its default values."""
    helm = shutil.which("helm")
    if helm is None:
        raise RenderError(
            f"{directory}: a Helm chart; checking it renders it with `helm template`, and "
            "`helm` is not on PATH: install Helm, or render the chart yourself (with your "
            f"values) and pipe it in: `helm template {directory} | magtape check -`")
    return _run([helm, "template", str(directory)], directory, "helm template")


def _kustomize_command() -> list[str] | None:
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    kubectl = shutil.which("kubectl")
    return [kubectl, "kustomize"] if kubectl else None


def _run(command: list[str], directory: Path, what: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=RENDER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{directory}: `{what}` did not finish in "
                          f"{RENDER_TIMEOUT_SECONDS:.0f} s") from None
    except OSError as exc:
        raise RenderError(f"{directory}: cannot run `{what}`: {exc}") from None
    if result.returncode != 0:
        message = result.stderr.strip()[-MAX_STDERR_CHARS:] or f"exit {result.returncode}"
        raise RenderError(f"{directory}: `{what}` failed: {message}")
    return result.stdout


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _subdirs(root: Path) -> Iterable[Path]:
    """Directories below ``root``, not entering hidden ones or symlinks."""
    try:
        entries = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return  # the walk that reads the files names the problem
    for d in entries:
        if d.is_dir() and not d.is_symlink() and not d.name.startswith("."):
            yield d
            yield from _subdirs(d)
