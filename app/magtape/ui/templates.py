"""The one Jinja2 environment the page and the HTML report render with.

Autoescaped: every name, label and message shown comes from a cluster or a
manifest, i.e. from whoever wrote it. Undefined variables raise, so a
template and its caller cannot drift apart silently. Templates are package
data (``magtape/ui/templates``), shipped in the wheel with the code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from magtape.ui.rows import time_left


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("magtape.ui", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["time_left"] = time_left
    env.filters["html_id"] = html_id
    return env


def html_id(text: str) -> str:
    """``text`` as part of an element id and its ``#`` link: ids hold no whitespace
    (a custom check ID may), so each run of it becomes ``_``."""
    return "_".join(str(text).split())


def when(moment: datetime | None) -> str:
    """A UTC timestamp people read: ``2026-12-05 14:03:07 UTC``."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
