"""Output formats of ``magtape check``: one module per format, loaded on demand.

Each module has ``render(run: CheckRun) -> str``. ``text`` is for people,
``json`` for scripts, ``junit`` for CI test tabs (GitLab, Jenkins), ``sarif``
for code scanning (GitHub, GitLab, Azure DevOps), ``github`` for workflow
annotations on the changed lines, ``html`` for people
reading a CI artifact or an e-mail (the page's templates, self-contained).

A format whose report is mostly one part per object also has ``parts(run)
-> list[str]`` (those parts, in order), and its ``render`` takes them from
``run.parts_of``: ``check -j N`` renders each object's part in the process
that checked it, so the one process that writes the report only joins them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports FORMATS without the evaluation
    from magtape.check.model import CheckRun

FORMATS = ("text", "json", "junit", "sarif", "github", "html")


def render(fmt: str, run: CheckRun) -> str:
    text: str = _format(fmt).render(run)
    return text


def parts(fmt: str, run: CheckRun) -> tuple[str, ...] | None:
    """Each object's part of the report, or None for a format without parts."""
    of_objects = getattr(_format(fmt), "parts", None)
    return None if of_objects is None else tuple(of_objects(run))


def _format(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: accepted {', '.join(FORMATS)}")
    return importlib.import_module(f"magtape.report.{fmt}")
