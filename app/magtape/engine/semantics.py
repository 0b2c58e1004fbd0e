"""Vetting of what a policy means: constructs the embedded engine cannot decide as OPA would.

Real OPA defines what a policy means (docs/policies.md). Compiling a policy
in regorus proves its syntax, not that regorus will give OPA's answers, and a
difference found per request is a wrong admission decision. So vetting reads
the policy's syntax tree (regorus' own parse, ``Engine.get_ast_as_json``) and
refuses, naming the construct, its line and what to do instead:

* a call of a builtin regorus lacks (``crypto.sha256``: it compiled, then
  failed on every request), of a builtin Rego v1 removed (``re_match``), or of
  a function no one defines (OPA refuses such a module; regorus would fail
  per request). The list comes from the engine itself
  (``rego_builtins.json``, written by hack/rego_builtins.py);
* arithmetic whose operands may not be integers. OPA computes with exact
  decimals, regorus with 64-bit binary floats: ``0.1 + 0.2`` is 0.3 in OPA
  and 0.30000000000000004 here, so a sum of CPU requests compared with 0.3
  decides differently. Integer arithmetic is exact in both and is never
  refused;
* printing a number whose text differs between the engines (``sprintf``,
  ``json.marshal``, ``yaml.marshal``): non-integer results, number literals
  written with a point or an exponent (OPA keeps ``2e3`` as written), and
  what ``to_number``, ``units.parse`` or an unmarshal returned;
* ``units.parse_bytes``, which rounds fractional byte counts differently
  (``"1.7"``: OPA 1, regorus 2).

Which values may be non-integers is found by a small flow analysis over the
policy and its libraries: number literals with a point or exponent,
``units.parse``, ``to_number``, division and unmarshalled documents are the
sources; variables, rule values, function results, collections and
iteration carry the mark; ``round``, ``ceil``, ``floor``, ``count``,
comparisons and string functions end it. ``round(x * 1000)`` over a
quantity is accepted (the rewrite the messages propose: integer millicores).
What the analysis cannot see is documented in docs/policies.md ("Exact
numbers"): numbers that arrive as non-integers in the input or in
``data``, and what other modules pass to a library's functions (a function's
parameters carry what its own package passes to it).

Pure Python over the syntax tree's JSON: it runs in the vetting worker, which
has the tree, and is tested without an engine process.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTINS_FILE = Path(__file__).with_name("rego_builtins.json")
SIDECAR = "or run it with the OPA-sidecar component (components/opa-sidecar)"
DOCS = "docs/policies.md#exact-numbers"

# Builtins OPA 1.x no longer has in Rego v1, with what replaces them
# (`magtape policy convert` rewrites the renames).
DEPRECATED: dict[str, str] = {
    "re_match": "`regex.match`",
    "net.cidr_overlap": "`net.cidr_contains`",
    "set_diff": "the set difference `a - b`",
    "any": "`true in xs`",
    "all": "`every x in xs { x == true }`",
    "cast_array": "",
    "cast_boolean": "",
    "cast_null": "",
    "cast_object": "",
    "cast_set": "",
    "cast_string": "",
}
RENAMED = {"re_match": "regex.match", "net.cidr_overlap": "net.cidr_contains"}

# What a value may be (bits of a mark):
FRACTION = 1  # may not be an integer: arithmetic on it is inexact here
SPELLING = 2  # OPA prints it as written or with its own precision

# Builtins whose result is never marked, whatever their arguments.
_CLEAN = frozenset({
    "round", "ceil", "floor", "count", "format_int", "is_number", "is_string", "is_boolean",
    "is_array", "is_set", "is_object", "is_null", "type_name", "concat", "sprintf",
    "json.marshal", "json.marshal_with_options", "yaml.marshal", "json.is_valid",
    "yaml.is_valid", "startswith", "endswith", "contains", "regex.match", "lower", "upper",
    "trim", "trim_space", "trim_left", "trim_right", "trim_prefix", "trim_suffix", "split",
    "replace", "substring", "indexof", "strings.count", "object.keys", "numbers.range",
    "time.parse_rfc3339_ns", "time.parse_ns", "time.parse_duration_ns", "time.now_ns",
    "bits.and", "bits.or", "bits.xor", "bits.negate", "bits.lsh", "bits.rsh",
})
# Builtins whose result is a source of marks.
_SOURCES: dict[str, tuple[int, str]] = {
    "units.parse": (FRACTION | SPELLING, "`units.parse`"),
    "to_number": (FRACTION | SPELLING, "`to_number`"),
    "json.unmarshal": (SPELLING, "`json.unmarshal`"),
    "yaml.unmarshal": (SPELLING, "`yaml.unmarshal`"),
}
_PRINTERS = frozenset({"sprintf", "json.marshal", "json.marshal_with_options", "yaml.marshal"})
_AGGREGATES = frozenset({"sum", "product"})
_ARITH = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%"}
_ROUND_EXEMPT = "round"


@dataclass(frozen=True)
class Refusal:
    """One construct the embedded engine would not decide as OPA does."""

    filename: str
    line: int
    message: str


@dataclass(frozen=True)
class Catalogue:
    """OPA's builtins, split by whether the embedded engine has them."""

    supported: frozenset[str]
    missing: frozenset[str]
    # Missing ones the engine has in name only, with why they do not count.
    notes: Mapping[str, str] = field(default_factory=dict)


@functools.cache
def catalogue() -> Catalogue:
    doc = json.loads(BUILTINS_FILE.read_text(encoding="utf-8"))
    return Catalogue(frozenset(doc["supported"]), frozenset(doc["missing"]),
                     dict(doc.get("in_name_only", {})))


@dataclass(frozen=True)
class Mark:
    """What a value may be, and the construct that made it so (for messages)."""

    bits: int
    origin: str

    def __or__(self, other: Mark | None) -> Mark:
        if other is None or other.bits & ~self.bits == 0:
            return self
        if self.bits == 0:
            return other
        return Mark(self.bits | other.bits, self.origin)


CLEAN = Mark(0, "")
Env = dict[str, Mark]


def _union(marks: Iterable[Mark]) -> Mark:
    out = CLEAN
    for m in marks:
        out = out | m
    return out


@dataclass
class _Module:
    filename: str
    source: bytes
    package: str
    ast: Mapping[str, Any]
    aliases: dict[str, str] = field(default_factory=dict)  # import alias -> data path
    rules: set[str] = field(default_factory=set)  # first segments of the rules it defines


def _text(module: _Module, span: Mapping[str, Any]) -> str:
    return module.source[span["start"]:span["end"]].decode(errors="replace")


def _node(expr: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    ((kind, body),) = expr.items()
    return kind, body


def _prefix(expr: Mapping[str, Any] | None) -> list[str]:
    """The longest static prefix of a rule head's reference (``p`` of ``p[k]``)."""
    if expr is None:
        return []
    path = _path(expr)
    if path is not None:
        return path
    kind, body = _node(expr)
    return _prefix(body["refr"]) if kind in ("RefDot", "RefBrack") else []


def _path(expr: Mapping[str, Any] | None) -> list[str] | None:
    """``a.b.c`` (a Var and RefDots, or string indexes) as its segments; None otherwise."""
    if expr is None:
        return None
    kind, body = _node(expr)
    if kind == "Var":
        return [body["value"]]
    if kind == "RefDot":
        base = _path(body["refr"])
        return None if base is None else [*base, body["field"][1]]
    if kind == "RefBrack":
        base = _path(body["refr"])
        ikind, ibody = _node(body["index"])
        if base is not None and ikind in ("String", "RawString"):
            return [*base, ibody["value"]]
    return None


class Analysis:
    """The flow analysis over one set of modules; ``findings`` for some of them."""

    def __init__(self, modules: list[_Module], catalogue: Catalogue) -> None:
        self._modules = modules
        self._catalogue = catalogue
        self._rules: dict[str, Mark] = {}  # data path of a rule -> mark of its value
        # A function's parameters: the marks of what its own module passes to it
        # (other modules' calls are not followed; see the module docstring).
        self._params: dict[tuple[str, int], Mark] = {}
        self._findings: dict[tuple[str, int, str], Refusal] = {}
        self._report = False

    # ----------------------------------------------------------- driving
    def run(self, report_files: set[str]) -> list[Refusal]:
        for _ in range(8):  # rule marks only grow: a fixpoint within a few passes
            before = (dict(self._rules), dict(self._params))
            for m in self._modules:
                self._module(m)
            if before == (self._rules, self._params):
                break
        self._report = True
        for m in self._modules:
            if m.filename in report_files:
                self._module(m)
        return sorted(self._findings.values(), key=lambda f: (f.filename, f.line))

    def _find(self, module: _Module, span: Mapping[str, Any], message: str) -> None:
        if self._report:
            key = (module.filename, span["line"], message)
            self._findings.setdefault(key, Refusal(module.filename, span["line"], message))

    def _module(self, m: _Module) -> None:
        for rule in m.ast.get("rules", []):
            kind, body = _node(rule)
            if kind != "Spec":
                continue
            self._rule(m, body)

    def _rule(self, m: _Module, rule: Mapping[str, Any]) -> None:
        hkind, head = _node(rule["head"])
        name = ".".join(["data", m.package, *_prefix(head.get("refr"))])
        mark = CLEAN
        bodies = rule.get("bodies") or []
        for body in bodies or [None]:
            env: Env = {}
            if hkind == "Func":
                for i, arg in enumerate(head.get("args", [])):
                    self._bind(m, arg, self._params.get((name, i), CLEAN), env)
            if body is not None and body.get("query"):
                self._query(m, body["query"], env)
            if body is not None and body.get("assign"):
                mark = mark | self._expr(m, body["assign"]["value"], env)
            if hkind == "Set" and head.get("key") is not None:
                mark = mark | self._expr(m, head["key"], env)
            elif head.get("assign") is not None:
                mark = mark | self._expr(m, head["assign"]["value"], env)
        if mark.bits:
            self._rules[name] = mark | self._rules.get(name)

    # ----------------------------------------------------------- queries
    def _query(self, m: _Module, query: Mapping[str, Any], env: Env) -> None:
        for stmt in query.get("stmts", []):
            kind, lit = _node(stmt["literal"])
            if kind == "Expr":
                self._statement(m, lit["expr"], env)
            elif kind == "NotExpr":
                self._expr(m, lit["expr"], env)
            elif kind == "SomeIn":
                coll = self._expr(m, lit["collection"], env)
                for part in (lit.get("key"), lit.get("value")):
                    if part is not None:
                        self._bind(m, part, coll, env)
            elif kind == "Every":
                coll = self._expr(m, lit["domain"], env)
                inner = dict(env)
                for part in (lit.get("key"), lit.get("value")):
                    if isinstance(part, Mapping) and "start" in part:
                        inner[_text(m, part)] = coll
                self._query(m, lit["query"], inner)
            # SomeVars declares names only.
            for w in stmt.get("with_mods", []) or []:
                if isinstance(w, Mapping) and "as" in w:
                    self._expr(m, w["as"], env)

    def _statement(self, m: _Module, expr: Mapping[str, Any], env: Env) -> None:
        kind, body = _node(expr)
        if kind == "AssignExpr":
            lhs, rhs = body["lhs"], body["rhs"]
            if body["op"] == "Eq" and self._unbound(lhs, env) is False \
                    and self._unbound(rhs, env):
                lhs, rhs = rhs, lhs  # `expr = x` binds x
            value = self._expr(m, rhs, env)
            if body["op"] == "ColEq" or self._unbound(lhs, env):
                self._bind(m, lhs, value, env)
            else:
                self._expr(m, lhs, env)
            return
        self._expr(m, expr, env)

    @staticmethod
    def _unbound(expr: Mapping[str, Any], env: Env) -> bool:
        kind, body = _node(expr)
        return kind == "Var" and body["value"] not in env and body["value"] != "_"

    def _bind(self, m: _Module, target: Mapping[str, Any], mark: Mark, env: Env) -> None:
        kind, body = _node(target)
        if kind == "Var":
            env[body["value"]] = mark | env.get(body["value"])
        elif kind in ("Array", "Set"):
            for item in body["items"]:
                self._bind(m, item, mark, env)
        elif kind == "Object":
            for f in body["fields"]:  # [span, key, value]
                self._bind(m, f[-1], mark, env)

    # ------------------------------------------------------- expressions
    def _expr(self, m: _Module, expr: Mapping[str, Any] | None, env: Env) -> Mark:
        if expr is None:
            return CLEAN
        kind, body = _node(expr)
        span = body.get("span", {"line": 0, "start": 0, "end": 0})
        if kind == "Number":
            return self._number(m, body)
        if kind == "Var":
            name = body["value"]
            if name in env:
                return env[name]
            return self._rules.get(f"data.{m.package}.{name}", CLEAN)
        if kind in ("RefDot", "RefBrack"):
            if kind == "RefBrack":
                self._expr(m, body["index"], env)
            path = _path(expr)
            if path is not None:
                resolved = self._resolve(m, path)
                if resolved is not None:
                    return _union(v for k, v in self._rules.items()
                                  if k == resolved or k.startswith(resolved + ".")
                                  or resolved.startswith(k + "."))
            return self._expr(m, body["refr"], env)
        if kind in ("Array", "Set"):
            return _union(self._expr(m, i, env) for i in body["items"])
        if kind == "Object":
            return _union(self._expr(m, f[-2], env) | self._expr(m, f[-1], env)
                          for f in body["fields"])
        if kind in ("ArrayCompr", "SetCompr"):
            inner = dict(env)
            self._query(m, body["query"], inner)
            return self._expr(m, body["term"], inner)
        if kind == "ObjectCompr":
            inner = dict(env)
            self._query(m, body["query"], inner)
            return self._expr(m, body["key"], inner) | self._expr(m, body["value"], inner)
        if kind == "UnaryExpr":
            return self._expr(m, body["expr"], env)
        if kind in ("BoolExpr", "Membership"):
            for part in ("lhs", "rhs", "key", "value", "collection"):
                if isinstance(body.get(part), Mapping):
                    self._expr(m, body[part], env)
            return CLEAN
        if kind == "AssignExpr":
            self._statement(m, expr, env)
            return CLEAN
        if kind == "ArithExpr":
            return self._arith(m, body, span, env)
        if kind == "BinExpr":  # set union / intersection
            return self._expr(m, body["lhs"], env) | self._expr(m, body["rhs"], env)
        if kind == "Call":
            return self._call(m, body, span, env)
        return CLEAN

    def _number(self, m: _Module, body: Mapping[str, Any]) -> Mark:
        text = _text(m, body["span"]) if "span" in body else str(body["value"])
        line = body.get("span", {}).get("line", 0)
        if any(c in text for c in ".eE"):
            value = body["value"]
            bits = SPELLING if isinstance(value, int) or float(value).is_integer() \
                else FRACTION | SPELLING
            return Mark(bits, f"the number {text} on line {line}")
        if len(text.lstrip("-")) > 15:  # beyond what a 64-bit float holds exactly
            return Mark(FRACTION | SPELLING, f"the number {text} on line {line}")
        return CLEAN

    def _arith(self, m: _Module, body: Mapping[str, Any], span: Mapping[str, Any],
               env: Env, exempt: bool = False) -> Mark:
        op = _ARITH.get(body["op"], body["op"])
        lhs, rhs = self._expr(m, body["lhs"], env), self._expr(m, body["rhs"], env)
        operands = lhs | rhs
        if operands.bits & FRACTION and not exempt:
            self._find(m, span, (
                f"`{op}` on a number that may not be an integer ({operands.origin}): OPA "
                "computes with exact decimals, the embedded engine with binary floating "
                "point, so the result can differ (0.1 + 0.2 is 0.3 in OPA, "
                "0.30000000000000004 here). Compute in integers, e.g. millicores "
                "`round(units.parse(q) * 1000)` compared with 300, " + SIDECAR
                + f" ({DOCS})"))
        if op == "/":
            return Mark(FRACTION | SPELLING, f"the division on line {span['line']}") | operands
        return operands

    def _call(self, m: _Module, body: Mapping[str, Any], span: Mapping[str, Any],
              env: Env) -> Mark:
        path = _path(body["fcn"])
        params = body.get("params", [])
        name = ".".join(path) if path else ""
        resolved = self._resolve(m, path) if path else None
        if resolved is not None:  # a function some module defines
            local = resolved.startswith(f"data.{m.package}.")
            for i, p in enumerate(params):
                mark = self._expr(m, p, env)
                if local and mark.bits:
                    self._params[(resolved, i)] = mark | self._params.get((resolved, i))
            return self._rules.get(resolved, CLEAN)
        if name == _ROUND_EXEMPT and len(params) == 1:
            pkind, pbody = _node(params[0])
            if pkind == "ArithExpr" and pbody["op"] in ("Mul", "Div") and any(
                    self._is_int_literal(m, side) for side in (pbody["lhs"], pbody["rhs"])):
                self._arith(m, pbody, pbody.get("span", span), env, exempt=True)
                return CLEAN
        marks = [self._expr(m, p, env) for p in params]
        args = _union(marks)
        self._check_builtin(m, name, span)
        if name in _AGGREGATES and args.bits & FRACTION:
            self._find(m, span, (
                f"`{name}` over numbers that may not be integers ({args.origin}): OPA adds "
                "exact decimals, the embedded engine binary floating point, so the result "
                "can differ (sum of 0.1 and 0.2). Sum integers, e.g. millicores "
                "`round(units.parse(q) * 1000)`, " + SIDECAR + f" ({DOCS})"))
        if name in _PRINTERS and args.bits:
            self._find(m, span, (
                f"`{name}` prints a number that OPA prints differently ({args.origin}): "
                "OPA keeps a number's exact decimal form (2e3, 0.5000000000), the embedded "
                "engine prints a binary float. Print integers with `format_int(n, 10)` or "
                "`data.magtape.lib.messages.str(n)`, " + SIDECAR + f" ({DOCS})"))
        if name in ("ceil", "floor") and args.bits & FRACTION:
            self._find(m, span, (
                f"`{name}` of a number that may not be an integer ({args.origin}): OPA 1.9 "
                "rounds negative numbers toward zero here (floor(-0.5) is 0, ceil(-0.5) is 1), "
                "the embedded engine does not. Use `round`, or compare without rounding, "
                + SIDECAR + f" ({DOCS})"))
        if name == "units.parse_bytes":
            self._find(m, span, (
                "`units.parse_bytes` rounds a fractional byte count differently from OPA "
                "(\"1.7\": OPA 1, the embedded engine 2). Use `units.parse` (or "
                "`data.magtape.lib.quantity.value`) and compare in integers, " + SIDECAR
                + f" ({DOCS})"))
        if name in _SOURCES:
            bits, what = _SOURCES[name]
            return Mark(bits, f"{what} on line {span['line']}")
        if name in _CLEAN:
            return CLEAN
        return args

    def _is_int_literal(self, m: _Module, expr: Mapping[str, Any]) -> bool:
        kind, body = _node(expr)
        return kind == "Number" and self._number(m, body).bits == 0

    def _check_builtin(self, m: _Module, name: str, span: Mapping[str, Any]) -> None:
        if not name or name in self._catalogue.supported:
            return
        if name in DEPRECATED:
            instead = DEPRECATED[name]
            self._find(m, span, (
                f"`{name}` is a deprecated builtin, not part of Rego v1"
                + (f": use {instead}" if instead else "")
                + (" (`magtape policy convert` rewrites it)" if name in RENAMED else "")))
        elif name in self._catalogue.missing:
            note = self._catalogue.notes.get(name)
            self._find(m, span, (
                f"the builtin `{name}` is not available in the embedded engine: "
                + (f"it exists there in name only ({note})" if note else
                   "the policy would fail on every request")
                + ". Rewrite it without the builtin (the available ones are listed in "
                "docs/policies.md#builtins), " + SIDECAR))
        elif name not in ("print", "trace"):
            self._find(m, span, (
                f"unknown function `{name}`: no module of the policy set defines it and OPA "
                "has no builtin of that name (docs/policies.md#builtins)"))

    def _resolve(self, m: _Module, path: list[str]) -> str | None:
        """The data path ``path`` refers to when a module defines it, else None."""
        head = path[0]
        if head == "data":
            return ".".join(path)
        if head in m.aliases:
            return ".".join([m.aliases[head], *path[1:]])
        if head in m.rules:
            return ".".join(["data", m.package, *path])
        return None


def _modules(ast_json: str) -> list[_Module]:
    out = []
    for entry in json.loads(ast_json):
        source = entry["source"]["contents"].encode()
        ast = entry["ast"]
        package = ".".join(_path(ast["package"]["refr"]) or [])
        module = _Module(entry["source"]["file"], source, package, ast)
        for imp in ast.get("imports", []):
            target = _path(imp["refr"]) or []
            if not target or target[0] != "data":
                continue
            alias = _text(module, imp["as"]) if imp.get("as") else target[-1]
            module.aliases[alias] = ".".join(target)
        for rule in ast.get("rules", []):
            kind, body = _node(rule)
            if kind == "Spec":
                path = _prefix(_node(body["head"])[1].get("refr"))
                if path:
                    module.rules.add(path[0])
        out.append(module)
    return out


def vet(ast_json: str, filenames: Iterable[str],
        known: Catalogue | None = None) -> list[Refusal]:
    """What in the modules named ``filenames`` the embedded engine would not
    decide as OPA does; ``ast_json`` is the whole set's syntax tree (its
    libraries give the marks of the rules the policy calls)."""
    return Analysis(_modules(ast_json), known or catalogue()).run(set(filenames))


def summary(findings: list[Refusal]) -> Iterator[str]:
    """The first finding's message, then how many more there are."""
    if findings:
        rest = len(findings) - 1
        lines = ", ".join(str(n) for n in sorted({f.line for f in findings[1:]}))
        yield findings[0].message + (
            f" (and {rest} more, on line{'s' if ',' in lines else ''} {lines})" if rest else "")
