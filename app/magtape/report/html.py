"""The HTML report: one self-contained file for CI artifacts and e-mail.

Rendered with the page's templates (``magtape/ui/templates``): a summary
first, then the failures grouped by check (message, how to fix it, the
check's documentation), exemptions beside the result they cover, then the
objects that passed, collapsed. No external asset and no script: the CSS is
inlined and ``<details>`` collapses. ``render`` is ``magtape check -o
html``; :func:`render_audit` is ``magtape audit -o html``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from magtape.audit.results import ObjectAudit
from magtape.check.model import CheckFinding, CheckRun, ObjectResult, ObjectVerdict
from magtape.policy import DenyLevel
from magtape.remediation import Catalogue
from magtape.ui.rows import CheckInfo, ExemptionNote, Row, group_rows, row_order, severity_word
from magtape.ui.templates import render as render_template


def render(run: CheckRun) -> str:
    """``magtape check -o html``."""
    c = run.counts
    rows = sorted((_check_row(o, f) for o in run.objects for f in o.findings), key=row_order)
    summary = [("objects checked", c["objects"]), ("denied", c["denied"]),
               ("allowed with warnings", c["warned"]), ("exempted", c["exempted"]),
               ("passed", c["passed"]), ("not targeted", c["skipped"])]
    if c["errors"]:
        summary.append(("could not be checked", c["errors"]))
    return render_template(
        "report.html", title="MagTape check report",
        subtitle=f"deny level {run.deny_level.value}", now=datetime.now(UTC),
        summary=summary, groups=group_rows(rows, lambda r: _info(run.catalogue, r)),
        denied=[(o.label, len(o.active),
                 sorted({f.violation.errcode for f in o.active if f.denies}))
                for o in run.objects if o.verdict is ObjectVerdict.DENIED],
        errors=[f"{o.label}: {e}" for o in run.objects for e in o.errors],
        passed=[o.label for o in run.objects if o.verdict is ObjectVerdict.PASS],
        skipped=[o.label for o in run.objects if o.verdict is ObjectVerdict.SKIP],
        show_location=True)


def render_audit(audits: Iterable[ObjectAudit], level: DenyLevel, catalogue: Catalogue) -> str:
    """``magtape audit -o html``: what the audit's PolicyReports would hold."""
    audits = sorted(audits, key=lambda a: a.ref)
    rows = sorted((Row(a.ref.namespace, a.ref.kind, a.ref.name, r.check_id, r.policy,
                       r.severity, r.result, r.message,
                       exemption=ExemptionNote("", note=r.note) if r.result == "skip" else None)
                   for a in audits for r in a.results), key=row_order)
    denied = sum(1 for a in audits if level in a.denied_at)
    summary = [("objects audited", len(audits)), ("would be denied", denied),
               ("results", len(rows)),
               ("warned", sum(1 for r in rows if r.result == "warn")),
               ("exempted", sum(1 for r in rows if r.result == "skip")),
               ("passed", sum(1 for a in audits if not a.results))]
    label = {a.ref: f"{a.ref.kind} {a.ref.namespace}/{a.ref.name}" for a in audits}
    return render_template(
        "report.html", title="MagTape audit report", subtitle=f"deny level {level.value}",
        now=datetime.now(UTC), summary=summary,
        groups=group_rows(rows, lambda r: _info(catalogue, r)), errors=[],
        denied=[(label[a.ref], sum(1 for r in a.results if r.result in ("fail", "warn")),
                 sorted({r.check_id or r.policy for r in a.results if r.result == "fail"}))
                for a in audits if level in a.denied_at],
        passed=[label[a.ref] for a in audits if not a.results], skipped=[],
        show_location=False)


def _check_row(o: ObjectResult, f: CheckFinding) -> Row:
    v = f.violation
    result = "skip" if f.exemption else "fail" if f.denies else "warn"
    return Row(o.namespace, o.manifest.kind, o.manifest.name, v.errcode, v.policy,
               severity_word(v.severity.value), result, v.msg, o.manifest.location,
               ExemptionNote("", note=f.exemption) if f.exemption else None)


def _info(catalogue: Catalogue, row: Row) -> CheckInfo:
    remedy = catalogue.get(row.check_id) or catalogue.get(row.policy)
    if remedy is None:
        return CheckInfo(row.check_id or row.policy, row.policy, row.severity)
    return CheckInfo(row.check_id or remedy.id, row.policy, row.severity, remedy.title,
                     remedy.hint, remedy.url)
