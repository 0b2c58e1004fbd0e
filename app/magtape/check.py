"""``magtape check``: the webhook's checks, offline, for CI pipelines.

Reads manifests (multi-document YAML, JSON, ``List`` objects, directories,
stdin), wraps each object in the AdmissionReview the API server would send,
and evaluates it with the same engine and decision logic as the webhook.
Namespace objects in the input become ``data.kubernetes.namespaces``, so
checks that read namespace annotations (MT2002) work offline too.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from magtape.decision import Decision, decide
from magtape.engine import EngineError
from magtape.engine.sources import SourceError, deep_merge, load_data_files, policy_modules
from magtape.policy import DenyLevel
from magtape.review import make_review
from magtape.settings import Settings

EXIT_OK, EXIT_DENIED, EXIT_INPUT = 0, 1, 2
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class InputError(ValueError):
    """A manifest cannot be read; the message names the file and document."""


@dataclass(frozen=True)
class Manifest:
    source: str  # "path#document" (1-based)
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True)
class CheckedObject:
    manifest: Manifest
    namespace: str
    decision: Decision


def read_manifests(paths: Sequence[str], stdin: TextIO) -> list[Manifest]:
    manifests: list[Manifest] = []
    for path in paths:
        if path == "-":
            manifests.extend(_parse("<stdin>", stdin.read()))
            continue
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path}: no such file or directory")
        files = sorted(f for f in p.rglob("*") if f.suffix in MANIFEST_SUFFIXES and f.is_file()) \
            if p.is_dir() else [p]
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{f}: cannot read: {exc}") from None
            manifests.extend(_parse(str(f), text))
    return manifests


def _parse(name: str, text: str) -> Iterator[Manifest]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{name}:{where} not valid YAML/JSON: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        where = f"{name}#{index}"
        if not isinstance(doc, dict):
            raise InputError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
        yield from _flatten(where, doc)


def _flatten(where: str, doc: dict[str, Any]) -> Iterator[Manifest]:
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            if not isinstance(item, dict):
                raise InputError(f"{where} items[{i}]: expected a Kubernetes object")
            yield from _flatten(f"{where} items[{i}]", item)
        return
    if not isinstance(kind, str) or not kind:
        raise InputError(f"{where}: object has no 'kind'")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        raise InputError(f"{where}: {kind} has no metadata.name")
    yield Manifest(where, doc)


def check_objects(settings: Settings, manifests: list[Manifest],
                  namespace: str) -> list[CheckedObject]:
    from magtape.engine.embedded import EmbeddedEngine

    data = load_data_files(settings.data_files)
    namespaces = {m.name: m.obj for m in manifests if m.kind == "Namespace"}
    if namespaces:
        deep_merge(data, {"kubernetes": {"namespaces": namespaces}})
    modules = policy_modules(settings.policy_dirs)
    engine = EmbeddedEngine(timeout_seconds=max(settings.engine_timeout_seconds, 30.0), workers=1)
    try:
        report = engine.load(modules, data)
        if report.errors:
            raise InputError("policies failed to load: " + "; ".join(map(str, report.errors)))
        checked = []
        for m in manifests:
            ns = str((m.obj.get("metadata") or {}).get("namespace") or namespace or "default")
            review = make_review(m.obj, ns)
            checked.append(CheckedObject(m, ns, decide(engine.evaluate(review),
                                                       settings.deny_level)))
        return checked
    finally:
        engine.close()


def run_check(settings: Settings, paths: Sequence[str], namespace: str, output: str,
              out: TextIO, err: TextIO, stdin: TextIO | None = None) -> int:
    try:
        manifests = read_manifests(paths, stdin or sys.stdin)
        checked = check_objects(settings, manifests, namespace)
    except (InputError, SourceError) as exc:
        print(f"magtape check: {exc}", file=err)
        return EXIT_INPUT
    except EngineError as exc:
        print(f"magtape check: the policy engine failed: {exc}", file=err)
        return EXIT_INPUT
    render = {"text": render_text, "json": render_json, "junit": render_junit}[output]
    out.write(render(checked, settings.deny_level))
    return EXIT_DENIED if any(not c.decision.allowed for c in checked) else EXIT_OK


def print_reviews(paths: Sequence[str], namespace: str, out: TextIO, err: TextIO) -> int:
    """``magtape review``: one AdmissionReview per object, for curl and debugging."""
    try:
        manifests = read_manifests(paths, sys.stdin)
    except InputError as exc:
        print(f"magtape review: {exc}", file=err)
        return EXIT_INPUT
    for m in manifests:
        ns = str((m.obj.get("metadata") or {}).get("namespace") or namespace or "default")
        out.write(make_review(m.obj, ns).raw + "\n")
    return EXIT_OK


def _label(c: CheckedObject) -> str:
    return f"{c.manifest.kind} {c.namespace}/{c.manifest.name}"


def render_text(checked: list[CheckedObject], level: DenyLevel) -> str:
    lines = []
    for c in checked:
        d = c.decision
        verdict = "DENIED" if not d.allowed else ("WARN" if d.violations else "PASS")
        lines.append(f"{verdict:6} {_label(c)}  ({c.manifest.source})")
        for v in d.violations:
            mark = "deny" if v in d.denying else "warn"
            lines.append(f"         {mark}: {v.msg}")
    denied = sum(not c.decision.allowed for c in checked)
    warned = sum(c.decision.allowed and bool(c.decision.violations) for c in checked)
    lines.append(f"\n{len(checked)} objects checked at deny level {level.value}: "
                 f"{denied} denied, {warned} allowed with warnings, "
                 f"{len(checked) - denied - warned} passed")
    return "\n".join(lines) + "\n"


def render_json(checked: list[CheckedObject], level: DenyLevel) -> str:
    doc = {
        "denyLevel": level.value,
        "objects": [{
            "source": c.manifest.source,
            "kind": c.manifest.kind,
            "namespace": c.namespace,
            "name": c.manifest.name,
            "allowed": c.decision.allowed,
            "violations": [{"policy": v.policy, "errcode": v.errcode,
                            "severity": v.severity.value, "msg": v.msg,
                            "denies": v in c.decision.denying} for v in c.decision.violations],
        } for c in checked],
        "summary": {"objects": len(checked),
                    "denied": sum(not c.decision.allowed for c in checked)},
    }
    return json.dumps(doc, indent=2) + "\n"


def render_junit(checked: list[CheckedObject], level: DenyLevel) -> str:
    suite = ET.Element("testsuite", name=f"magtape (deny level {level.value})",
                       tests=str(len(checked)),
                       failures=str(sum(not c.decision.allowed for c in checked)))
    for c in checked:
        case = ET.SubElement(suite, "testcase", classname=c.manifest.kind,
                             name=f"{c.namespace}/{c.manifest.name}", file=c.manifest.source)
        if not c.decision.allowed:
            failure = ET.SubElement(case, "failure", message=c.decision.message, type="denied")
            failure.text = "\n".join(v.msg for v in c.decision.denying)
        if c.decision.violations:
            ET.SubElement(case, "system-out").text = "\n".join(c.decision.messages)
    root = ET.Element("testsuites")
    root.append(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
