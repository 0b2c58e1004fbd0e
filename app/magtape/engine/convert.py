"""Rego v0 to Rego v1: what ``magtape policy convert`` does to the original MagTape's policies.

The original MagTape (and OPA before 1.0) wrote Rego v0: ``deny[msg] { ... }``
without ``if`` or ``contains``, and builtins v1 removed (``re_match``). MagTape
and OPA 1.x read Rego v1, so such a policy is refused at load with a pointer
here. The conversion is the one ``opa fmt --v0-v1`` makes, plus the renamed
builtins it leaves alone, done without OPA (the image has none): regorus
parses the module in its v0 mode, and the text is edited at the positions of
its syntax tree, so comments, layout and everything else stay as written:

* ``import rego.v1`` after the package clause; ``import future.keywords...``
  dropped (v1 has the keywords);
* ``if`` before every rule body (``else`` bodies too), ``contains`` in
  partial-set heads (``deny[msg] {`` becomes ``deny contains msg if {``);
* ``re_match`` -> ``regex.match``, ``net.cidr_overlap`` -> ``net.cidr_contains``.

The result is compiled as Rego v1 before it is returned; other removed
builtins (``any``, ``set_diff``, ``cast_*``) have no one-name replacement and
are reported by vetting on load, with what to write instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from magtape.engine.semantics import RENAMED


class ConvertError(Exception):
    """The module cannot be converted; the message says why and where."""


def _walk(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _brace(text: bytes, body: Mapping[str, Any]) -> int | None:
    """Where the ``{`` opening ``body`` is: its span starts there, except for an
    ``else`` body, whose span starts at ``else`` (the brace follows its value)."""
    pos = body["query"]["span"]["start"]
    if body.get("is_else"):
        pos = body["span"]["start"] + len("else")
        if body.get("assign"):
            ((kind, value),) = body["assign"]["value"].items()
            # A string's span leaves out its closing quote.
            pos = value["span"]["end"] + (1 if kind in ("String", "RawString") else 0)
        while text[pos:pos + 1] in (b" ", b"\t", b"\r", b"\n"):
            pos += 1
    return pos if text[pos:pos + 1] == b"{" else None


def _first_error_line(exc: BaseException) -> str:
    from magtape.engine.worker import error_text

    return error_text(exc)


def _parse(filename: str, source: str, v0: bool) -> Any:
    import regorus

    engine = regorus.Engine()
    engine.set_rego_v0(v0)
    engine.add_policy(filename, source)
    return json.loads(engine.get_ast_as_json())[0]["ast"]


def is_v1(source: str, filename: str = "policy.rego") -> bool:
    """Whether ``source`` already compiles as Rego v1."""
    try:
        _parse(filename, source, v0=False)
    except RuntimeError:
        return False
    return True


def convert(source: str, filename: str = "policy.rego") -> str:
    """``source`` (Rego v0 or v1) as Rego v1; ConvertError when it cannot be read."""
    try:
        ast = _parse(filename, source, v0=True)
    except RuntimeError as exc:
        raise ConvertError(f"{filename}: not valid Rego v0 either: "
                           f"{_first_error_line(exc)}") from None
    text = source.encode()
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement)

    imports = ast.get("imports", [])
    has_v1 = False
    for imp in imports:
        span = imp["span"]
        written = text[span["start"]:span["end"]].decode()
        target = written.split(None, 1)[1].strip() if " " in written else ""
        if target == "rego.v1":
            has_v1 = True
        elif target.startswith("future.keywords"):
            end = span["end"]
            while end < len(text) and text[end:end + 1] in (b" ", b"\t"):
                end += 1
            if text[end:end + 1] == b"\n":
                end += 1
            edits.append((span["start"], end, b""))
    if not has_v1:
        end = ast["package"]["span"]["end"]
        edits.append((end, end, b"\n\nimport rego.v1"))

    for rule in ast.get("rules", []):
        if "Spec" not in rule:
            continue
        spec = rule["Spec"]
        (kind, head), = spec["head"].items()
        if kind == "Set" and head.get("key") is not None:
            ref_end = head["refr"][next(iter(head["refr"]))]["span"]["end"]
            if text[ref_end:ref_end + 1] == b"[":
                key = head["key"][next(iter(head["key"]))]["span"]
                key_text = text[key["start"]:key["end"]]
                edits.append((ref_end, head["span"]["end"], b" contains " + key_text))
        for body in spec.get("bodies", []):
            query = body.get("query")
            if not query:
                continue
            brace = _brace(text, body)
            if brace is None:
                continue  # a one-line body already written with `if`
            before = text[:brace].rstrip()
            if before.endswith(b"if"):
                continue
            edits.append((brace, brace, b"if "))

    for node in _walk(ast):
        call = node.get("Call")
        if not isinstance(call, Mapping):
            continue
        ((_, fcn),) = call["fcn"].items()
        name = text[fcn["span"]["start"]:fcn["span"]["end"]].decode()
        if name in RENAMED:
            edits.append((fcn["span"]["start"], fcn["span"]["end"], RENAMED[name].encode()))

    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + replacement + text[end:]
    result = text.decode()
    try:
        _parse(filename, result, v0=False)
    except RuntimeError as exc:
        raise ConvertError(f"{filename}: the converted module does not compile as Rego v1 "
                           f"({_first_error_line(exc)}); finish it by hand") from None
    return result
