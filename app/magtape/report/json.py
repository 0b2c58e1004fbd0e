"""The JSON report, for scripts: every object, every finding, the counts.

The source of an object is given as separate ``path``, ``document`` (1-based),
``line`` and ``item`` (its position in a List) fields; each finding keeps the
policy's structured ``details`` and its remedy.
"""

from __future__ import annotations

import json
from typing import Any

from magtape.check.model import CheckFinding, CheckRun, ObjectResult


def render(run: CheckRun) -> str:
    # One key, and one object, per line: readable and diffable, and every
    # piece goes through the C encoder (indent= falls back to pure Python,
    # which takes seconds on thousands of objects).
    head = {"denyLevel": run.deny_level.value, "summary": run.counts,
            "skippedDocuments": dict(sorted(run.skipped_documents.items()))}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    objects = ",\n    ".join(run.parts_of("json", parts))
    body = f"[\n    {objects}\n  ]" if objects else "[]"
    return "{\n" + "\n".join(lines) + f'\n  "objects": {body}\n}}\n'


def parts(run: CheckRun) -> list[str]:
    return [json.dumps(_object(o)) for o in run.objects]


def _object(o: ObjectResult) -> dict[str, Any]:
    m = o.manifest
    return {
        "path": m.path, "document": m.index, "line": m.line, "item": m.item,
        "apiVersion": m.obj.get("apiVersion", ""), "kind": m.kind,
        "namespace": o.namespace or None, "name": m.name,
        "verdict": o.verdict.value,
        "allowed": not any(f.denies for f in o.active),
        "checks": [p.errcode for p in o.checks],
        "violations": [_finding(f) for f in o.findings],
        "errors": list(o.errors),
    }


def _finding(f: CheckFinding) -> dict[str, Any]:
    v = f.violation
    out: dict[str, Any] = {
        "policy": v.policy, "errcode": v.errcode, "severity": v.severity.value, "msg": v.msg,
        "denies": f.denies and not f.exemption, "details": dict(v.details or {}),
        "hint": f.remedy.hint if f.remedy else None, "url": f.remedy.url if f.remedy else None,
    }
    if f.exemption:
        out["exempted"] = f.exemption
    if f.note:
        out["note"] = f.note
    return out
