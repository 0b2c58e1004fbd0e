"""``magtape audit``'s Pod Security view: per namespace, its level and what fails per control.

Answers "what would break if this namespace moved to restricted" (with
``--pod-security restricted`` every object is judged at that level) and,
without the flag, what the levels in effect fail today. Each namespace in
the audit's scope is listed with the level its MagTape labels choose and the
standard Pod Security Admission labels it carries: a namespace with PSA
labels and no MagTape level is a *candidate* (reported, never enforced:
MagTape does not read PSA labels as its own). Controls are the MT3001-MT3099
checks; an object counts once per control, as denied when admission would
deny it for that control, else as warned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from magtape.audit.results import FAIL, WARN, ObjectAudit
from magtape.kube.objects import metadata
from magtape.podsecurity import PodSecurity, is_pss_check, posture


@dataclass
class ControlCount:
    denied: int = 0
    warned: int = 0


@dataclass
class NamespaceView:
    namespace: str
    level: PodSecurity | None  # as the checks read the MagTape labels (None: the default)
    psa: Mapping[str, str]
    candidate: bool
    invalid: str = ""
    controls: dict[str, ControlCount] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace,
                "level": self.level.document() if self.level else None,
                "psaLabels": dict(self.psa), "candidate": self.candidate,
                **({"invalidLabel": self.invalid} if self.invalid else {}),
                "controls": {c: {"denied": n.denied, "warned": n.warned}
                             for c, n in sorted(self.controls.items())}}


def summarize(namespaces: Iterable[Mapping[str, Any]], audits: Iterable[ObjectAudit],
              default: PodSecurity | None = None) -> list[NamespaceView]:
    """One view per namespace object given (the audit's scope), in name order."""
    views: dict[str, NamespaceView] = {}
    for ns in namespaces:
        meta = metadata(ns)
        name = str(meta.get("name") or "")
        p = posture(meta.get("labels"), default)
        views[name] = NamespaceView(name, p.magtape, p.psa, p.candidate, p.invalid)
    for a in audits:
        view = views.get(a.ref.namespace)
        if view is None:
            continue
        outcome: dict[str, str] = {}  # control -> the worst result on this object
        for r in a.results:
            if (is_pss_check(r.check_id) and r.result in (FAIL, WARN)
                    and outcome.get(r.check_id) != FAIL):
                outcome[r.check_id] = r.result
        for control, result in outcome.items():
            count = view.controls.setdefault(control, ControlCount())
            if result == FAIL:
                count.denied += 1
            else:
                count.warned += 1
    return [views[n] for n in sorted(views)]


def table(views: list[NamespaceView], override: PodSecurity | None,
          default: PodSecurity | None) -> str:
    """The section printed under the audit's table."""
    as_if = f"as if every namespace were {override}" if override else (
        f"namespace labels, else the default {default}" if default
        else "namespace labels (no cluster-wide default)")
    lines = [f"Pod Security ({as_if}):"]
    rows = [("NAMESPACE", "LEVEL", "PSA LABELS", "CONTROL", "DENIED", "WARNED")]
    for v in views:
        level = str(v.level) if v.level else "-"
        if v.invalid:
            level += f" (invalid label {v.invalid})"
        psa = ",".join(f"{m}={lv}" for m, lv in v.psa.items()) or "-"
        if v.candidate:
            psa += " (candidate)"
        if not v.controls:
            rows.append((v.namespace, level, psa, "-", "0", "0"))
        for control, n in sorted(v.controls.items()):
            rows.append((v.namespace, level, psa, control, str(n.denied), str(n.warned)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
              .rstrip() for row in rows]
    candidates = [v.namespace for v in views if v.candidate]
    if candidates:
        lines.append(f"{len(candidates)} namespaces carry only Pod Security Admission labels "
                     f"({', '.join(candidates)}): candidates for "
                     "k8s.t-mobile.com/pod-security, not enforced by MagTape "
                     "(docs/pod-security.md)")
    return "\n".join(lines) + "\n"
