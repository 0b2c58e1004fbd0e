"""Output formats of ``magtape check``: one module per format, loaded on demand.

Each module has ``render(run: CheckRun) -> str``. ``text`` is for people,
``json`` for scripts, ``junit`` for CI test tabs (GitLab, Jenkins), ``sarif``
for code scanning (GitHub, GitLab, Azure DevOps), ``github`` for workflow
annotations on the changed lines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports FORMATS without the evaluation
    from magtape.check.model import CheckRun

FORMATS = ("text", "json", "junit", "sarif", "github")


def render(fmt: str, run: CheckRun) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: accepted {', '.join(FORMATS)}")
    text: str = importlib.import_module(f"magtape.report.{fmt}").render(run)
    return text
