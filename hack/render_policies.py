#!/usr/bin/env python3
"""Render the policy ConfigMaps in base/policies/ from the Rego sources in policies/.

Why it exists: in a cluster MagTape (or kube-mgmt, with the OPA sidecar) loads
its policies from ConfigMaps labelled ``openpolicyagent.org/policy: rego``.
Those ConfigMaps are generated from ``policies/`` so the Rego is written,
tested and reviewed once; this script turns each folder into one ConfigMap:

- ``policies/<name>/`` (a check with its ``policy.rego``, or a shared folder
  such as ``lib/``) becomes ConfigMap ``policy-<name>``, with ``policy.rego``
  under the key ``policy-<name>.rego`` - except that the twelve checks of the
  original MagTape keep the original's ConfigMap names and keys (for example
  ``policy-liveness-probe-check``), so ``kubectl apply`` on an upgrade
  replaces them (ORIGINAL_FOLDERS);
- the entrypoint (``lib/main.rego``) and any ``.rego`` file directly in
  ``policies/`` go to ``magtape-opa-entrypoint``, the original's entrypoint
  ConfigMap, which it replaces likewise;
- test modules (``*_test.rego``) and hidden folders are left out, by the same
  rule the engine uses, so tests never reach a serving policy set.

The output (one YAML file per ConfigMap plus a ``kustomization.yaml``) is
deterministic: sorted, no timestamps. ``--check`` renders in memory and exits
1, naming the stale files, when the committed ``base/policies/`` differs; CI
runs it through ``make check-generated``.

Usage: hack/render_policies.py [--check] [--policies DIR] [--output DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from magtape.engine.sources import rego_files

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR = REPO / "policies"
DEFAULT_OUTPUT_DIR = REPO / "base" / "policies"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
NAMESPACE = "magtape-system"
ENTRYPOINT_CONFIGMAP = "magtape-opa-entrypoint"
# Where the original MagTape kept the same policy: the same ConfigMap name and
# the same key, so `kubectl apply` of this release replaces the original's Rego
# in place (even in ConfigMaps created without `kubectl apply`) instead of
# leaving the old copy loaded beside the new one. New policies get
# `policy-<folder>`.
ORIGINAL_FOLDERS = {
    "emptydir": "policy-emptydir-check",
    "host-path": "policy-host-path-check",
    "host-port": "policy-host-port-check",
    "liveness-probe": "policy-liveness-probe-check",
    "node-port-range": "policy-node-port-range-check",
    "pdb": "policy-pdb-check",
    "port-name-mismatch": "policy-port-name-mismatch",
    "privileged-pod": "policy-privileged-pod-check",
    "readiness-probe": "policy-readiness-probe-check",
    "resource-limits": "policy-resource-limits-check",
    "resource-requests": "policy-resource-requests-check",
    "singleton-pod": "policy-singleton-pod-check",
}
# The entrypoint replaces the original's (ConfigMap magtape-opa-entrypoint,
# key magtape.rego) for the same reason.
ORIGINAL_FILES = {
    "lib/main.rego": (ENTRYPOINT_CONFIGMAP, "magtape.rego"),
}
# The API server refuses objects over 1 MiB; stay clear of it with metadata.
MAX_CONFIGMAP_BYTES = 900 * 1024
GENERATED_SUFFIX = ".yaml"
KUSTOMIZATION = "kustomization.yaml"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class RenderError(Exception):
    """The sources cannot be rendered; the message names the file and the fix."""


@dataclass(frozen=True)
class PolicyGroup:
    """One ConfigMap: its name, the folder it comes from and its (key, text) files."""

    name: str
    sources: tuple[str, ...]
    files: tuple[tuple[str, str], ...]


def _read_rego(path: Path) -> str:
    """The file's text; line endings are normalised to LF (universal newlines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RenderError(f"cannot read {path}: {exc}") from None
    bad = [c for c in text if (ord(c) < 32 and c not in "\n\t") or c == "\x7f"]
    if bad:
        raise RenderError(f"{path} contains control character {bad[0]!r}: remove it")
    return text


def _location(rel: Path) -> tuple[str, str]:
    """(ConfigMap name, data key) for the policy source at ``rel`` (relative to policies/)."""
    if rel.as_posix() in ORIGINAL_FILES:
        return ORIGINAL_FILES[rel.as_posix()]
    if len(rel.parts) == 1:
        name, key = ENTRYPOINT_CONFIGMAP, rel.name
    else:
        folder = rel.parts[0]
        if not _DNS_LABEL.match(folder):
            raise RenderError(f"policy folder {folder!r} cannot name a ConfigMap: "
                              "use lowercase letters, digits and '-' (e.g. host-port)")
        name = ORIGINAL_FOLDERS.get(folder, f"policy-{folder}")
        key = f"{name}.rego" if rel.parts[1:] == ("policy.rego",) else ".".join(rel.parts[1:])
    if not _CONFIGMAP_KEY.match(key):
        raise RenderError(f"policies/{rel.as_posix()}: {key!r} is not a valid ConfigMap key; "
                          "use letters, digits, '-', '_' and '.' in file names")
    return name, key


def collect_groups(policy_dir: Path) -> list[PolicyGroup]:
    """Every non-test ``.rego`` file under ``policy_dir``, grouped into ConfigMaps."""
    if not policy_dir.is_dir():
        raise RenderError(f"policy directory {policy_dir} does not exist")
    grouped: dict[str, dict[str, tuple[str, str]]] = {}
    for path in rego_files(policy_dir, tests=False):
        rel = path.relative_to(policy_dir)
        name, key = _location(rel)
        files = grouped.setdefault(name, {})
        if key in files:
            raise RenderError(f"policies/{rel.as_posix()} and {files[key][0]} both map to key "
                              f"{key!r} of ConfigMap {name}: rename one of them")
        files[key] = (f"policies/{rel.as_posix()}", _read_rego(path))

    groups = []
    for name, files in sorted(grouped.items()):
        sources = tuple(sorted(src for src, _ in files.values()))
        size = sum(len(text.encode()) for _, text in files.values())
        if size > MAX_CONFIGMAP_BYTES:
            raise RenderError(f"ConfigMap {name} ({', '.join(sources)}) would hold {size} bytes "
                              f"of Rego, over the {MAX_CONFIGMAP_BYTES} it can carry: split it")
        groups.append(PolicyGroup(name=name, sources=sources,
                                  files=tuple((k, text) for k, (_, text) in sorted(files.items()))))
    return groups


def block_scalar(text: str, indent: int) -> str:
    """``text`` as a YAML literal block scalar whose lines are indented by ``indent``.

    The chomping indicator keeps the exact trailing newlines; an indentation
    indicator is added when the first line starts with a space (YAML would
    otherwise guess the indentation from it).
    """
    if text == "":
        return '""'
    stripped = text.rstrip("\n")
    trailing = len(text) - len(stripped)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    first = stripped.split("\n", 1)[0] if stripped else ""
    indicator = "2" if first[:1] in (" ", "\t") or stripped == "" else ""
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in stripped.split("\n"))
    if trailing > 1:
        body += "\n" * (trailing - 1)
    return f"|{indicator}{chomp}\n{body}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    env.filters["block_scalar"] = block_scalar
    return env


def render(groups: Sequence[PolicyGroup]) -> dict[str, str]:
    """File name -> content for ``base/policies/``; each ConfigMap is verified by parsing."""
    env = _environment()
    configmap = env.get_template("policy-configmap.yaml.j2")
    outputs: dict[str, str] = {}
    for group in groups:
        text = configmap.render(name=group.name, sources=group.sources,
                                namespace=NAMESPACE, files=group.files)
        _verify(text, group)
        outputs[group.name + GENERATED_SUFFIX] = text
    kustomization = env.get_template("policies-kustomization.yaml.j2")
    outputs[KUSTOMIZATION] = kustomization.render(files=sorted(outputs))
    return outputs


def _verify(text: str, group: PolicyGroup) -> None:
    """The rendered YAML must load back to exactly the Rego it was made from."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"ConfigMap {group.name}: rendered YAML does not parse ({exc}); "
                          "this is a bug in hack/render_policies.py") from None
    if doc.get("data") != dict(group.files) or doc["metadata"]["name"] != group.name:
        raise RenderError(f"ConfigMap {group.name}: rendered YAML does not round-trip to the "
                          "Rego sources; this is a bug in hack/render_policies.py")


def _generated_files(out_dir: Path) -> set[str]:
    if not out_dir.is_dir():
        return set()
    return {p.name for p in out_dir.iterdir() if p.is_file() and p.suffix == GENERATED_SUFFIX}


def stale_files(outputs: dict[str, str], out_dir: Path) -> list[str]:
    """Names of files in ``out_dir`` that are missing, different or no longer generated."""
    stale = []
    for name in sorted(set(outputs) | _generated_files(out_dir)):
        path = out_dir / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != outputs.get(name):
            stale.append(name)
    return stale


def write(outputs: dict[str, str], out_dir: Path) -> list[str]:
    """Make ``out_dir`` hold exactly ``outputs``; return the names that changed."""
    changed = stale_files(outputs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in changed:
        path = out_dir / name
        if name in outputs:
            path.write_text(outputs[name], encoding="utf-8", newline="\n")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the output directory is stale")
    parser.add_argument("--policies", type=Path, default=DEFAULT_POLICY_DIR,
                        help="Rego source directory (default: policies/)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the ConfigMaps go (default: base/policies/)")
    args = parser.parse_args(argv)
    try:
        outputs = render(collect_groups(args.policies))
    except RenderError as exc:
        print(f"render_policies: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(outputs, args.output)
        if stale:
            print(f"render_policies: {args.output} is stale ({', '.join(stale)} "
                  "differ from a fresh render of policies/): run `make policies` and "
                  "commit the result", file=sys.stderr)
            return 1
        print(f"render_policies: {args.output} is up to date "
              f"({len(outputs) - 1} ConfigMaps)")
        return 0
    changed = write(outputs, args.output)
    print(f"render_policies: {len(outputs) - 1} ConfigMaps in {args.output}"
          + (f"; updated {', '.join(changed)}" if changed else "; no changes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
