"""GitHub Actions workflow commands: an annotation on the object's line per failure.

``::error`` for failures that deny at the deny level, ``::warning`` for the
others, each titled with the check ID and carrying how to fix it; a summary
line closes the output. The values are escaped as the runner expects
(``%`` and LF, and in properties ``:`` and ``,``); any other control or
bidirectional character, CR included, is shown as an escape (``\\x0d``) so
it cannot reach the annotation raw.
"""

from __future__ import annotations

from magtape.check.model import CheckRun, ObjectResult
from magtape.text import escape


def render(run: CheckRun) -> str:
    lines = [part for part in run.parts_of("github", parts) if part]
    c = run.counts
    lines.append(f"magtape check: {c['objects']} objects at deny level {run.deny_level.value}: "
                 f"{c['denied']} denied, {c['warned']} warned, {c['passed']} passed, "
                 f"{c['skipped']} skipped, {c['exempted']} exempted")
    return "\n".join(lines) + "\n"


def parts(run: CheckRun) -> list[str]:
    """Each object's commands ("" when it has none)."""
    return ["\n".join(_commands(o)) for o in run.objects]


def _commands(o: ObjectResult) -> list[str]:
    lines = [_command("error", o, "MagTape policy error", f"{o.label}: {e}") for e in o.errors]
    for f in o.active:
        v = f.violation
        text = f"{o.label}: {v.msg}"
        if f.remedy:
            text += f"\nHow to fix: {f.remedy.hint}"
            text += f" {f.remedy.url}" if f.remedy.url else ""
        lines.append(_command("error" if f.denies else "warning", o,
                              f"{v.errcode} {v.policy}", text))
    return lines


def _command(level: str, o: ObjectResult, title: str, message: str) -> str:
    props = []
    if o.manifest.is_file:
        props.append(f"file={_prop(o.manifest.path)}")
        if o.manifest.line:
            props.append(f"line={o.manifest.line}")
    props.append(f"title={_prop(title)}")
    return f"::{level} {','.join(props)}::{_data(message)}"


def _data(s: str) -> str:
    # Control and bidirectional characters but newlines as visible escapes (they
    # would reach the annotation raw), then the runner's encoding of % and newlines.
    return escape(s, keep_newlines=True).replace("%", "%25").replace("\n", "%0A")


def _prop(s: str) -> str:
    return _data(s).replace(":", "%3A").replace(",", "%2C")
