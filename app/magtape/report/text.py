"""The text report: one line per object, its failures under it, a summary last.

Each failed check is followed once per object by how to fix it and where the
check is documented. Failure messages are the webhook's, but every value
that comes from the input or the policies (kind, namespace, name, path,
message, note, hint) is shown through :func:`magtape.text.escape`: a control
character (newline and tab included, ESC, NUL, C1, U+2028/U+2029, and the
bidirectional and hidden formatting characters) is written as an escape such
as ``\\n`` or ``\\x1b``. So one finding stays on one line, and a manifest
cannot start a line of CI output with ``::error::`` (a GitHub Actions
workflow command) or send escape sequences to the terminal.
"""

from __future__ import annotations

from magtape.check.model import CheckRun, ObjectResult
from magtape.remediation import Remedy
from magtape.text import escape


def render(run: CheckRun) -> str:
    lines = list(run.parts_of("text", parts))
    c = run.counts
    summary = (f"{c['objects']} objects checked at deny level {run.deny_level.value}: "
               f"{c['denied']} denied, {c['warned']} allowed with warnings, "
               f"{c['passed']} passed, {c['skipped']} skipped (no policy targets their kind)")
    if c["exempted"]:
        summary += f", {c['exempted']} exempted"
    if c["errors"]:
        summary += f", {c['errors']} could not be checked"
    if c["nonKubernetesDocuments"]:
        summary += f"; {c['nonKubernetesDocuments']} non-Kubernetes documents left out"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines) + "\n"


def parts(run: CheckRun) -> list[str]:
    return ["\n".join([f"{o.verdict.value:6} {escape(o.label)}  ({escape(o.manifest.location)})",
                       *_details(o)])
            for o in run.objects]


def _details(o: ObjectResult) -> list[str]:
    lines = [f"         error: {escape(e)}" for e in o.errors]
    remedies: dict[str, Remedy] = {}
    for f in o.findings:
        mark = "exempt" if f.exemption else "deny" if f.denies else "warn"
        lines.append(f"         {mark}: {escape(f.violation.msg)}")
        if f.exemption:
            lines.append(f"                 ({escape(f.exemption)})")
        elif f.note:
            lines.append(f"                 {escape(f.note)}")
        if not f.exemption and f.remedy:
            remedies.setdefault(f.remedy.id, f.remedy)
    for r in remedies.values():
        link = f"  {escape(r.url)}" if r.url else ""
        lines.append(f"         fix {escape(r.id)}: {escape(r.hint)}{link}")
    return lines
