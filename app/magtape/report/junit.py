"""The JUnit XML report, for CI test tabs (GitLab, Jenkins, Azure DevOps).

One test case per object x check that targets its kind: a failure when the
check denies at the deny level, ``system-out`` for a failure below it, a
skipped case when it is exempted, and one skipped case for an object no
policy targets. ``file`` is the bare path and ``line`` the line of the object
so file-linking annotators can find it.

:func:`junit_xml` is the one JUnit writer: ``magtape test`` (ruletest.py)
reports its Rego tests through it too. ElementTree escapes ``&``, ``<`` and
quotes but writes every other character as it is, and XML 1.0 cannot hold
most C0 controls, U+FFFE/U+FFFF or lone surrogates: a manifest name with a
NUL would make the file unreadable. So the serialized document, which only
the values can put such characters in, has each of them written as its
escape (``\\x00``, ``\\udc80``); the rest is kept exactly.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from magtape.check.model import CheckRun, ObjectResult, ObjectVerdict
from magtape.text import escape_char

# Characters XML 1.0 cannot hold (its Char production): C0 but tab, LF and CR;
# surrogates (paired ones cannot be in a str that encodes); U+FFFE and U+FFFF.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class JUnitCase:
    """One ``testcase``: ``outcome`` is passed, failure, error or skipped; a passed case
    with ``text`` carries it as ``system-out`` (a finding below the deny level, say)."""

    classname: str
    name: str
    outcome: str = "passed"
    message: str = ""
    text: str = ""
    kind: str = ""  # the failure's or error's type attribute
    file: str = ""
    line: int = 0
    seconds: float | None = None


def junit_xml(name: str, suites: Sequence[tuple[str, Sequence[JUnitCase]]]) -> str:
    """A ``testsuites`` document with one ``testsuite`` per (name, cases), counts filled in."""
    root = ET.Element("testsuites", name=name)
    for suite_name, cases in suites:
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        _count(suite, cases)
        seconds = [c.seconds for c in cases if c.seconds is not None]
        if seconds:
            suite.set("time", f"{sum(seconds):.3f}")
        suite.extend(_element(case) for case in cases)
    _count(root, [case for _, cases in suites for case in cases])
    ET.indent(root)
    document = _NOT_XML.sub(escape_char, ET.tostring(root, encoding="unicode"))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + document + "\n"


def _count(element: ET.Element, cases: Sequence[JUnitCase]) -> None:
    element.set("tests", str(len(cases)))
    for outcome, attribute in (("failure", "failures"), ("error", "errors"),
                               ("skipped", "skipped")):
        element.set(attribute, str(sum(c.outcome == outcome for c in cases)))


def _element(case: JUnitCase) -> ET.Element:
    attrs = {"classname": case.classname, "name": case.name}
    if case.file:
        attrs["file"] = case.file
        if case.line:
            attrs["line"] = str(case.line)
    if case.seconds is not None:
        attrs["time"] = f"{case.seconds:.3f}"
    element = ET.Element("testcase", attrs)
    if case.outcome in ("failure", "error"):
        detail = {"message": case.message, **({"type": case.kind} if case.kind else {})}
        ET.SubElement(element, case.outcome, detail).text = case.text
    elif case.outcome == "skipped":
        ET.SubElement(element, "skipped", message=case.message)
    elif case.text:
        ET.SubElement(element, "system-out").text = case.text
    return element


def render(run: CheckRun) -> str:
    cases = [case for o in run.objects for case in _cases(o)]
    return junit_xml("magtape", [(f"magtape check (deny level {run.deny_level.value})", cases)])


def _case(o: ObjectResult, name: str, **outcome: str) -> JUnitCase:
    where = ({"file": o.manifest.path, "line": o.manifest.line or 0}
             if o.manifest.is_file else {})
    return JUnitCase(o.label, name, **outcome, **where)  # type: ignore[arg-type]


def _cases(o: ObjectResult) -> list[JUnitCase]:
    if o.verdict is ObjectVerdict.SKIP:
        return [_case(o, "no policy targets this kind", outcome="skipped",
                      message=f"no policy targets kind {o.manifest.kind}")]
    out = []
    for policy in o.checks:
        name = f"{policy.errcode} {policy.name}"
        findings = [f for f in o.findings if f.violation.policy == policy.name]
        active = [f for f in findings if not f.exemption]
        text = "\n".join(f.violation.msg for f in findings)
        remedy = next((f.remedy for f in findings if f.remedy), None)
        if remedy:
            text += f"\nHow to fix: {remedy.hint}" + (f" ({remedy.url})" if remedy.url else "")
        if o.errors and (not o.failed_policies or policy.name in o.failed_policies):
            out.append(_case(o, name, outcome="error", message="policy failed at runtime",
                             kind="error", text="\n".join(o.errors)))
        elif any(f.denies for f in active):
            out.append(_case(o, name, outcome="failure", message=active[0].violation.msg,
                             kind=policy.severity.value, text=text))
        elif findings and not active:
            out.append(_case(o, name, outcome="skipped",
                             message="exempted: " + findings[0].exemption))
        else:
            out.append(_case(o, name, text=text if active else ""))
    return out
