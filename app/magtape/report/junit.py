"""The JUnit XML report, for CI test tabs (GitLab, Jenkins, Azure DevOps).

One test case per object x check that targets its kind: a failure when the
check denies at the deny level, ``system-out`` for a failure below it, a
skipped case when it is exempted, and one skipped case for an object no
policy targets. ``file`` is the bare path and ``line`` the line of the object
so file-linking annotators can find it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from magtape.check.model import CheckRun, ObjectResult, Verdict


def render(run: CheckRun) -> str:
    suite = ET.Element("testsuite", name=f"magtape check (deny level {run.deny_level.value})")
    tests = failures = errors = skipped = 0
    for o in run.objects:
        for case, kind in _cases(o):
            suite.append(case)
            tests += 1
            failures += kind == "failure"
            errors += kind == "error"
            skipped += kind == "skipped"
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="magtape", tests=str(tests), failures=str(failures),
                      errors=str(errors), skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _case(o: ObjectResult, name: str) -> ET.Element:
    attrs = {"classname": o.label, "name": name}
    if o.manifest.is_file:
        attrs["file"] = o.manifest.path
        if o.manifest.line:
            attrs["line"] = str(o.manifest.line)
    return ET.Element("testcase", attrs)


def _cases(o: ObjectResult) -> list[tuple[ET.Element, str]]:
    if o.verdict is Verdict.SKIP:
        case = _case(o, "no policy targets this kind")
        ET.SubElement(case, "skipped", message=f"no policy targets kind {o.manifest.kind}")
        return [(case, "skipped")]
    out = []
    for policy in o.checks:
        case = _case(o, f"{policy.errcode} {policy.name}")
        findings = [f for f in o.findings if f.violation.policy == policy.name]
        active = [f for f in findings if not f.exemption]
        text = "\n".join(f.violation.msg for f in findings)
        remedy = next((f.remedy for f in findings if f.remedy), None)
        if remedy:
            text += f"\nHow to fix: {remedy.hint}" + (f" ({remedy.url})" if remedy.url else "")
        kind = "passed"
        if o.errors and (not o.failed_policies or policy.name in o.failed_policies):
            ET.SubElement(case, "error", message="policy failed at runtime",
                          type="error").text = "\n".join(o.errors)
            kind = "error"
        elif any(f.denies for f in active):
            ET.SubElement(case, "failure", message=active[0].violation.msg,
                          type=policy.severity.value).text = text
            kind = "failure"
        elif findings and not active:
            ET.SubElement(case, "skipped", message="exempted: " + findings[0].exemption)
            kind = "skipped"
        elif active:
            ET.SubElement(case, "system-out").text = text
        out.append((case, kind))
    return out
