"""Where policy modules and base documents come from, before compilation.

Policies are read from directories (recursively, every ``*.rego`` except
``*_test.rego``: tests never reach the serving bundle). Without directories
the built-in policies are used: shipped inside the wheel as
``magtape/builtin_policies`` and read from the repository's ``policies/`` in a
source checkout. Data files (JSON or YAML) are merged into ``data`` like
``opa run`` does.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from magtape.podsecurity import DATA_PATH, with_pod_security
from magtape.policy import PolicyModule
from magtape.remediation import builtin_policies_root
from magtape.review import MAX_NESTING_DEPTH, nested_deeper_than
from magtape.settings import Settings


class SourceError(ValueError):
    """A policy directory or data file cannot be read; the message names it."""


def builtin_policy_dir() -> Path:
    """The built-in policies: inside the installed wheel, else the source tree's."""
    root = builtin_policies_root()
    if root is None:
        raise SourceError("the built-in policies are missing from this installation; "
                          "reinstall magtape or pass --policies DIR")
    return root


def is_test_module(path: str) -> bool:
    return path.endswith("_test.rego")


def is_hidden(relative_parts: Sequence[str]) -> bool:
    """The one rule for what a walk leaves out: any path part starting with "." or "_"
    (``.git``, ``_wip/``). What is served is what is tested and what ships."""
    return any(p.startswith((".", "_")) for p in relative_parts)


def rego_files(root: Path, *, tests: bool) -> list[Path]:
    """The ``.rego`` files below ``root`` (or ``root`` itself), in a stable order:
    test modules only when ``tests``; hidden ones never (a named file is always read).
    The engine, ``magtape test``, ``magtape check`` and hack/render_policies.py all walk
    with this, so they agree on what a policy directory holds."""
    if root.is_file():
        return [root]
    return [f for f in sorted(root.rglob("*.rego"))
            if not is_hidden(f.relative_to(root).parts)
            and (tests or not is_test_module(f.name))]


def modules_from_dirs(dirs: Iterable[str | Path]) -> list[PolicyModule]:
    """Every non-test ``.rego`` file below ``dirs``, in a stable order."""
    modules: list[PolicyModule] = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise SourceError(f"policy directory {str(root)!r} does not exist")
        for f in rego_files(root, tests=False):
            if is_test_module(f.name):
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SourceError(f"cannot read policy file {str(f)!r}: {exc}") from None
            modules.append(PolicyModule(origin=str(f), filename=str(f), source=text))
    return modules


def builtin_modules() -> list[PolicyModule]:
    return modules_from_dirs([builtin_policy_dir()])


def source_digest(source: str) -> str:
    return hashlib.sha256(source.strip().encode()).hexdigest()


@functools.cache
def builtin_digests() -> frozenset[str]:
    """Digests of the built-in modules' text, whatever they are loaded from (files,
    or the ConfigMaps rendered from them): these are the modules
    tests/test_differential.py proves against OPA in regorus' compiled mode."""
    return frozenset(source_digest(m.source) for m in builtin_modules())


def policy_modules(dirs: Sequence[str | Path]) -> list[PolicyModule]:
    """The policies in ``dirs`` (the built-ins when empty) with the shared library.

    Custom policies import ``data.magtape.lib``; every built-in library package
    that ``dirs`` do not provide themselves is added, so an edited copy of the
    library in ``dirs`` replaces the built-in one package by package.
    """
    if not dirs:
        return builtin_modules()
    from magtape.engine.policyset import package_of

    modules = modules_from_dirs(dirs)
    provided = {package_of(m.source) for m in modules}
    library = modules_from_dirs([builtin_policy_dir() / "lib"])
    return modules + [m for m in library if package_of(m.source) not in provided]


def load_data_files(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Merge JSON/YAML files into one ``data`` document (later files win per key)."""
    data: dict[str, Any] = {}
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read data file {str(path)!r}: {exc}") from None
        try:
            doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise SourceError(f"data file {str(path)!r} is not valid JSON/YAML: {exc}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SourceError(f"data file {str(path)!r} must hold an object at the top level")
        _check_data(path, doc)
        deep_merge(data, doc)
    return data


def _check_data(path: Path, doc: dict[str, Any]) -> None:
    """Refuse what every engine worker would refuse (and so never serve): values
    JSON cannot carry, and nesting past the engine's recursion limit."""
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"data file {str(path)!r} holds a value JSON cannot carry ({exc}): "
                          "use strings, finite numbers, booleans, null, lists and objects; "
                          "quote dates") from None
    if nested_deeper_than(doc, MAX_NESTING_DEPTH):
        raise SourceError(f"data file {str(path)!r} is nested deeper than {MAX_NESTING_DEPTH} "
                          "levels, more than the engine takes")


def base_data(settings: Settings) -> dict[str, Any]:
    """``data`` before any replication: the data files, then what settings put there
    (``magtape.pod_security``: the cluster-wide Pod Security default and the
    offline ``--pod-security`` override). Every engine and command starts from this."""
    return with_pod_security(load_data_files(settings.engine.data_files),
                             settings.pod_security.default, settings.pod_security.override)


def opa_documents(settings: Settings) -> dict[str, Any]:
    """What the ``opa`` engine writes into OPA's ``data`` (kube-mgmt loads the rest):
    ``magtape/pod_security``, empty when the default is off, so that OPA and the
    embedded engine see the same document."""
    section = with_pod_security({}, settings.pod_security.default,
                                settings.pod_security.override)
    return {"/".join(DATA_PATH): section.get(DATA_PATH[0], {}).get(DATA_PATH[1], {})}


def deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``other`` into ``into`` recursively; objects merge, other values replace."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = json.loads(json.dumps(value)) if isinstance(value, Mapping) else value
    return into
