"""The package's import layering, checked on the source (design.md, rule 8).

Dependencies point downward: entry points and wiring -> web -> core ->
adapters -> shared vocabulary. A module may import its own layer or lower
ones, never a higher one; the core and the shared vocabulary import no web
framework and no HTTP or Kubernetes client. Every module must be placed in a
layer here, so a new module is a conscious decision, not a silent exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "app" / "magtape"

# Highest first. A module's layer is the entry of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("magtape.__main__", "magtape.cli", "magtape.server", "magtape.wiring",
               "magtape.check", "magtape.ruletest", "magtape.runtime", "magtape.report",
               "magtape.audit", "magtape.listeners", "magtape.inloop", "magtape.processes",
               "magtape.policytool", "magtape.againstopa", "magtape.ui.command")),
    ("web", ("magtape.web", "magtape.listeners", "magtape.ui.web")),
    ("core", ("magtape.admission", "magtape.enforcement", "magtape.ui.model",
              "magtape.ui.history")),
    ("adapters", ("magtape.engine", "magtape.kube", "magtape.notify")),
    ("shared", ("magtape.__init__", "magtape.policy", "magtape.decision", "magtape.review",
                "magtape.settings", "magtape.metrics", "magtape.text", "magtape.remediation",
                "magtape.namespaces", "magtape.ttlcache", "magtape.background",
                "magtape.kube.objects", "magtape.project", "magtape.podsecurity",
                "magtape.ui", "magtape.ui.rows", "magtape.ui.templates")),
)
RANK = {name: rank for rank, (name, _) in enumerate(reversed(LAYERS))}

# Third-party modules that belong to the outer layers only.
FRAMEWORKS = ("flask", "waitress", "requests", "kubernetes", "urllib3")
FRAMEWORK_FREE = ("core", "shared")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return best[1] if best else None


def imports_of(source: str, module: str) -> set[str]:
    """Absolute names of every module ``source`` imports, typing-only ones included."""
    found: set[str] = set()
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from magtape.pkg import x` may name a submodule of a package.
            if (PACKAGE.parent / base.replace(".", "/")).is_dir():
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(sources: dict[str, str]) -> list[str]:
    problems: list[str] = []
    for module, source in sorted(sources.items()):
        layer = layer_of(module)
        if layer is None:
            problems.append(f"{module}: not placed in a layer (add it to LAYERS in {__name__})")
            continue
        for imported in sorted(imports_of(source, module)):
            root = imported.split(".")[0]
            if root == "magtape":
                target = layer_of(imported)
                if target is not None and RANK[target] > RANK[layer]:
                    problems.append(f"{module} ({layer}) imports {imported} ({target}): upward")
            elif root in FRAMEWORKS and layer in FRAMEWORK_FREE:
                problems.append(f"{module} ({layer}) imports {imported}: frameworks stay outside")
    return problems


def package_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_the_package_imports_only_downward() -> None:
    assert violations(package_sources()) == []


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("magtape.notify.slack", "from magtape.admission import AdmissionService\n",
     "magtape.notify.slack (adapters) imports magtape.admission (core): upward"),
    ("magtape.engine.x", "from ..web import create_app\n",
     "magtape.engine.x (adapters) imports magtape.web (web): upward"),
    ("magtape.decision", "import requests\n",
     "magtape.decision (shared) imports requests: frameworks stay outside"),
    ("magtape.admission", "from flask import Flask\n",
     "magtape.admission (core) imports flask: frameworks stay outside"),
    ("magtape.newthing", "import json\n",
     "magtape.newthing: not placed in a layer (add it to LAYERS in tests.test_layers)"),
])
def test_an_upward_or_framework_import_is_reported(module: str, source: str,
                                                   expected: str) -> None:
    assert violations({module: source}) == [expected.replace("tests.test_layers", __name__)]


def test_downward_and_sibling_imports_pass() -> None:
    assert violations({
        "magtape.web": "from magtape.admission import AdmissionService\n",
        "magtape.kube.discovery": "from magtape.engine.sources import x\n",
        "magtape.admission": "from magtape.decision import decide\nimport logging\n",
    }) == []


# What the core may not hold (docs/architecture.md): no Kubernetes client or watch,
# no thread of its own, no file reading. Those live in magtape.wiring, the adapters
# and magtape.check, which feed the core what it decides on.
CORE_FORBIDDEN_IMPORTS = ("magtape.kube.rest", "magtape.kube.reflector", "magtape.kube.informers",
                          "magtape.kube.client", "magtape.background")
CORE_FORBIDDEN_CALLS = ("Thread", "read_text", "read_bytes", "open", "Worker")


def test_the_core_holds_no_client_no_thread_and_reads_no_file() -> None:
    problems = []
    for module, source in sorted(package_sources().items()):
        if layer_of(module) != "core":
            continue
        for imported in imports_of(source, module):
            if imported.startswith(CORE_FORBIDDEN_IMPORTS):
                problems.append(f"{module} imports {imported}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in CORE_FORBIDDEN_CALLS:
                    problems.append(f"{module}:{node.lineno} calls {called}()")
    assert problems == []



def test_regorus_is_imported_only_in_the_engine() -> None:
    """The engine is swappable in one package: nothing else names regorus."""
    importers = sorted(module for module, source in package_sources().items()
                       if any(i.split(".")[0] == "regorus" for i in imports_of(source, module)))
    assert importers and all(m.startswith("magtape.engine.") for m in importers), importers
