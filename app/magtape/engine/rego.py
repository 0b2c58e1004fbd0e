"""Thin adapter over regopy (rego-cpp): compile bundles, query entrypoints.

All regopy calls live here. The hot path uses regopy's C-level functions
directly (``rego_bundle_query_entrypoint`` + ``rego_output_string``) rather
than ``regopy.Output``, which parses every result twice; ctypes releases the
GIL during these calls, so worker threads evaluate in parallel, each with its
own Interpreter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from regopy import Bundle, Interpreter, RegoError
from regopy.rego_shared import (
    rego_bundle_query_entrypoint,
    rego_free_output,
    rego_output_ok,
    rego_output_string,
)

from magtape.policy import PolicyModule


class RegoQueryError(Exception):
    """A query did not produce a value (runtime error in the policy)."""


@dataclass(frozen=True)
class RegoLocation:
    filename: str
    line: int | None
    message: str


def entrypoint(package: str, rule: str) -> str:
    """``kubernetes.admission.pdb`` + ``deny`` -> ``kubernetes/admission/pdb/deny``."""
    return "/".join([*package.split("."), rule])


def compile_bundle(modules: Iterable[PolicyModule], data: Mapping[str, Any],
                   entrypoints: Iterable[str], query: str | None = None) -> Bundle:
    """Compile ``modules`` and ``data`` into a bundle; raise RegoError on errors.

    ``query`` (e.g. ``"true"``) compiles modules that have no entrypoint yet.
    """
    interp = Interpreter()
    for m in modules:
        interp.add_module(m.filename, m.source)
    if data:
        interp.add_data_json(json.dumps(data))
    return interp.build(query, list(entrypoints))


class Evaluator:
    """One Interpreter used to query bundles; not thread-safe: one per thread."""

    def __init__(self) -> None:
        self._interp = Interpreter()

    def set_input(self, json_text: str) -> None:
        self._interp.set_input_term(json_text)

    def query(self, bundle: Bundle, ep: str) -> Any:
        """The value of entrypoint ``ep``; None when undefined."""
        out = rego_bundle_query_entrypoint(self._interp._impl, bundle._impl, ep)
        try:
            text = rego_output_string(out)
            if not rego_output_ok(out):
                raise RegoQueryError(_first_line(text))
        finally:
            rego_free_output(out)
        if text == "undefined":
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            raise RegoQueryError(_first_line(text) or "the engine returned no value") from None
        expressions = doc.get("expressions") if isinstance(doc, dict) else None
        if not expressions:
            return None
        return expressions[0]


_ERROR_RE = re.compile(r"\(error (?:(\d+):)?")
_MSG_RE = re.compile(r"\(errormsg (\d+):")


def locate_error(exc: RegoError | str, sources: Mapping[str, str]) -> list[RegoLocation]:
    """Turn regopy's error AST into (file, line, message) triples.

    rego-cpp reports ``(error <len>:<file>|<byte offset>|<length> (errormsg <len>:<text>) ...)``
    with length-prefixed strings; lines are computed from the byte offset.
    """
    text = str(exc)
    found: list[RegoLocation] = []
    for m in _ERROR_RE.finditer(text):
        pos = m.end()
        filename, offset = "", None
        if m.group(1):
            n = int(m.group(1))
            filename = text[pos:pos + n]
            rest = text[pos + n:]
            loc = re.match(r"\|(\d+)\|", rest)
            offset = int(loc.group(1)) if loc else None
        msg_match = _MSG_RE.search(text, pos)
        message = "compile error"
        if msg_match:
            n = int(msg_match.group(1))
            message = text[msg_match.end():msg_match.end() + n]
        line = None
        if offset is not None and filename in sources:
            line = sources[filename].encode("utf-8")[:offset].count(b"\n") + 1
        found.append(RegoLocation(filename, line, message))
    if not found:
        found.append(RegoLocation("", None, _first_line(text) or "compile error"))
    return found


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
