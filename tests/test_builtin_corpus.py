"""Every builtin the embedded engine has, on varied values, against real OPA.

For each builtin that app/magtape/engine/rego_builtins.json lists as
available, calls are generated from its declaration in OPA's capabilities:
each argument position in turn takes every value of a pool of its type
(integers, decimals, exponent forms, huge numbers, Unicode and empty
strings, null, arrays, sets and objects of mixed types) while the others keep
a typical value, plus hand-written calls for builtins whose arguments need a
shape (a regular expression, a time layout, a JSON patch). Arguments travel
in the input, so OPA's type checker accepts every call and both engines see
the same values. All calls form one module, evaluated once by ``opa eval``
(undefined rules are absent) and rule by rule by regorus in this process.

Each call must give the same JSON value in both, or be a documented
difference:

* OPA undefined where regorus raises an error: OPA makes a builtin's error
  undefined, regorus fails the evaluation (docs/policies.md, "Check the type
  before a builtin"; in the webhook the error is reported, never a silent
  decision);
* the builtins in :data:`KNOWN`, each with its reason, which docs/policies.md
  lists ("Known differences of builtins") and which vetting refuses where it
  can (units.parse_bytes, printing and arithmetic of decimals).

A KNOWN entry that no longer differs fails too, so the list stays true.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regorus

from conftest import REPO
from magtape.engine import semantics
from opasupport import OPA

# Not functions of their arguments (clock, randomness, the network, the runtime).
SKIP = frozenset({"time.now_ns", "rand.intn", "uuid.rfc4122", "opa.runtime", "http.send",
                  "print", "trace", "net.lookup_ip_addr"})

NUMBERS: list[Any] = [0, 1, -7, 3, 2.5, -0.5, 0.1, "1e3", "1.0", "1e20", 12345678901234567890,
                      "0.30000000000000004", 1099511627776, 65535]
STRINGS: list[Any] = ["", "abc", "a,b,c", "Héllo wörld", "日本語", "  padded  ", "1e3", "0.5",
                      "100m", "1.5Ki", "-42", "a.b.c", "ABC", "\u00e9", "x\ny", "10.0.0.0/8"]
ARRAYS: list[Any] = [[], [1, "a", None, True], [3, 1, 2], [0.1, 0.2], ["b", "a", "a"],
                     [[1, 2], {"k": "v"}], [1, 2.5, "1e3"]]
OBJECTS: list[Any] = [{}, {"a": 1, "b": [1, 2]}, {"k": None, "é": "日本"}, {"x": {"y": 1}}]
OTHER: list[Any] = [None, True, False]
POOLS: dict[str, list[Any]] = {"number": NUMBERS, "string": STRINGS, "array": ARRAYS,
                               "set": ARRAYS, "object": OBJECTS, "boolean": [True, False],
                               "null": [None]}
TYPICAL: dict[str, Any] = {"number": 3, "string": "abc", "array": [3, 1, 2], "set": [3, 1, 2],
                           "object": {"a": 1, "b": [1, 2]}, "boolean": True, "null": None}

# Calls whose arguments need a shape, (builtin, [arguments]).
SHAPED: list[tuple[str, list[Any]]] = [
    ("regex.match", ["^a.c$", "abc"]), ("regex.match", ["[0-9]+", "日本1"]),
    ("regex.find_n", ["[a-c]", "abcabc", 2]), ("regex.split", [",", "a,b,,c"]),
    ("regex.replace", ["a(b)", "xabx", "[$1]"]), ("regex.is_valid", ["(["]),
    ("regex.find_all_string_submatch_n", ["(a)(b)?", "ab a", -1]),
    ("regex.template_match", ["urn:{[a-z]+}:x", "urn:foo:x", "{", "}"]),
    ("glob.match", ["*.example.com", ["."], "a.example.com"]),
    ("glob.match", ["**", [], "a/b/c"]),
    ("sprintf", ["%d items, %s, %v", [3, "x", [1, "a"]]]), ("sprintf", ["%.2f", [2.5]]),
    ("sprintf", ["%v", ["1e3"]]), ("sprintf", ["%x", [255]]), ("sprintf", ["%q", ["é"]]),
    ("format_int", [255, 16]), ("format_int", [-7, 2]), ("format_int", [2.5, 10]),
    ("substring", ["Héllo", 1, 3]), ("substring", ["abc", 0, -1]),
    ("indexof", ["日本語", "語"]), ("indexof_n", ["abab", "b"]),
    ("strings.replace_n", [{"a": "1", "b": "2"}, "abc"]),
    ("time.parse_rfc3339_ns", ["2024-02-29T12:00:00Z"]),
    ("time.parse_ns", ["2006-01-02", "2024-03-01"]),
    ("time.parse_duration_ns", ["1h30m"]), ("time.parse_duration_ns", ["1.5s"]),
    ("time.date", [1709208000000000000]), ("time.clock", [1709208000000000000]),
    ("time.weekday", [1709208000000000000]),
    ("time.add_date", [1709208000000000000, 0, 1, 1]),
    ("time.format", [1709208000000000000]),
    ("time.diff", [1709208000000000000, 1609459200000000000]),
    ("units.parse", ["100m"]), ("units.parse", ["1.5Gi"]), ("units.parse", ["2e3"]),
    ("units.parse", ["500m"]), ("units.parse_bytes", ["1.7"]), ("units.parse_bytes", ["2KiB"]),
    ("to_number", ["1e3"]), ("to_number", ["0.1"]), ("to_number", ["-0"]),
    ("json.patch", [{"a": 1}, [{"op": "add", "path": "/b", "value": 2}]]),
    ("json.filter", [{"a": {"b": 1, "c": 2}}, ["a/b"]]),
    ("json.remove", [{"a": {"b": 1, "c": 2}}, ["a/b"]]),
    ("json.unmarshal", ['{"a": 2.50, "b": 1e3}']), ("json.marshal", [[1, "é", None]]),
    ("json.marshal_with_options", [{"a": 1}, {"pretty": True, "indent": "  "}]),
    ("json.match_schema", [{"a": 1}, {"type": "object"}]),
    ("json.verify_schema", [{"type": "object"}]),
    ("yaml.unmarshal", ["a: 1\nb: [x, 2.5]\n"]), ("yaml.marshal", [{"a": [1, "x"]}]),
    ("base64.decode", ["aGVsbG8="]), ("base64url.decode", ["aGVsbG8"]),
    ("hex.decode", ["68656c6c6f"]), ("urlquery.decode_object", ["a=1&a=2&b=%C3%A9"]),
    ("urlquery.encode_object", [{"a": ["1", "2"], "b": "é"}]),
    ("net.cidr_contains", ["10.0.0.0/8", "10.1.2.3"]), ("net.cidr_expand", ["10.0.0.0/30"]),
    ("net.cidr_is_valid", ["10.0.0.0/33"]),
    ("semver.compare", ["1.2.3", "1.10.0"]), ("semver.is_valid", ["1.2.3-rc.1"]),
    ("object.get", [{"a": {"b": 1}}, ["a", "b"], "default"]),
    ("object.union_n", [[{"a": 1}, {"a": 2, "b": 3}]]),
    ("object.filter", [{"a": 1, "b": 2}, ["a"]]), ("object.remove", [{"a": 1, "b": 2}, ["a"]]),
    ("object.subset", [{"a": 1, "b": 2}, {"a": 1}]),
    ("array.slice", [[1, 2, 3, 4], 1, 3]), ("array.slice", [[1, 2], -1, 9]),
    ("numbers.range", [1, 4]), ("numbers.range_step", [0, 10, 3]),
    ("graph.reachable", [{"a": ["b"], "b": ["c"], "c": []}, ["a"]]),
    ("graph.reachable_paths", [{"a": ["b"], "b": []}, ["a"]]),
    ("walk", [{"a": [1]}]),
    ("bits.lsh", [1, 40]), ("bits.and", [12, 10]), ("bits.negate", [5]),
    ("round", [2.5]), ("round", [-2.5]), ("ceil", [0.1]), ("floor", [-0.1]), ("abs", [-0.5]),
    ("sum", [[0.1, 0.2]]), ("product", [[0.1, 3]]), ("max", [[1, "a", None]]),
    ("min", [[1, "a", None]]), ("sort", [[3, "a", None, [1], {"k": 1}, 2.5]]),
    ("count", ["日本語"]), ("lower", ["ÀÉ"]), ("upper", ["straße"]),
    ("strings.reverse", ["日本"]), ("trim", ["xxaxx", "x"]), ("split", ["a日b", "日"]),
    ("concat", ["-", ["a", "é"]]), ("strings.any_prefix_match", [["ab", "cd"], ["c"]]),
    ("uuid.parse", ["00000000-0000-4000-8000-000000000000"]),
]


def capabilities() -> dict[str, list[str]]:
    """Per builtin OPA has, the types of its arguments."""
    caps = json.loads(subprocess.run([str(OPA), "capabilities", "--current"], check=True,
                                     capture_output=True, text=True).stdout)
    out = {}
    for b in caps["builtins"]:
        types = []
        for arg in b["decl"].get("args", []):
            of = arg.get("of")
            if arg["type"] == "any" and isinstance(of, list) and of:
                types.append(str(of[0].get("type", "any")))
            else:
                types.append(str(arg["type"]))
        out[b["name"]] = types
    return out


# Builtins whose result grows with a number argument (a range to 10^20, every address
# of a /8) get small numbers and only their shaped calls for addresses.
SMALL_NUMBERS = frozenset({"numbers.range", "numbers.range_step", "bits.lsh", "time.add_date"})
SHAPED_ONLY = frozenset({"net.cidr_expand"})


def generated(name: str, types: list[str]) -> Iterator[list[Any]]:
    if name in SHAPED_ONLY:
        return
    typical = [TYPICAL.get(t, "abc") for t in types]
    yield typical
    for i, t in enumerate(types):
        pool = POOLS.get(t, [*NUMBERS[:6], *STRINGS[:6], *ARRAYS[:3], *OBJECTS[:2], *OTHER])
        if name in SMALL_NUMBERS:
            pool = [v for v in pool if not isinstance(v, (int, float, str))
                    or (isinstance(v, (int, float)) and abs(v) <= 100)]
        for value in [*pool, None]:
            yield [*typical[:i], value, *typical[i + 1:]]


def number_text(value: Any) -> str:
    """A pool value as Rego text: strings that spell numbers ("1e3") become literals."""
    return json.dumps(value)


def call_text(index: int, name: str, args: list[Any], types: list[str]) -> str:
    parts = []
    for j, t in enumerate(types):
        ref = f"input.cases[{index}][{j}]"
        parts.append(f"{{x | some x in {ref}}}" if t == "set" else ref)
    if name == "walk":  # a relation: every (path, value) pair, gathered
        return f"c_{index} := [p | walk({parts[0]}, p)]"
    return f"c_{index} := {name}({', '.join(parts)})"


def literal_numbers(args: list[Any], types: list[str]) -> list[Any]:
    """Number-typed arguments written as strings ("1e3") become those numbers, as
    written: the input's text carries the lexeme to both engines."""
    return [Lexeme(a) if t == "number" and isinstance(a, str) else a
            for a, t in zip(args, types, strict=True)]


class Lexeme(str):
    pass


def encode(value: Any) -> str:
    if isinstance(value, Lexeme):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


# Builtins the engines answer differently on some values, with why. docs/policies.md
# lists them; vetting refuses the ones marked so in the reason.
KNOWN: dict[str, str] = {
    # Decimals (vetting refuses arithmetic and aggregation on them).
    "sum": "decimals added in binary floating point (vetting refuses)",
    "product": "decimals multiplied in binary floating point (vetting refuses)",
    "units.parse_bytes": "fractional bytes rounded, OPA truncates (vetting refuses)",
    "ceil": "OPA 1.9 gives ceil(-0.5) = 1 (vetting refuses it on non-integers)",
    "floor": "OPA 1.9 gives floor(-0.5) = 0 (vetting refuses it on non-integers)",
    # A number argument that is not an integer: OPA undefined, regorus truncates.
    "array.slice": "a non-integer or exponent-form index (1.0, 1e3) is accepted",
    "substring": "a non-integer offset is accepted",
    "regex.find_n": "a non-integer count is accepted",
    "regex.find_all_string_submatch_n": "a non-integer count is accepted",
    # Integers beyond 64 bits.
    "bits.and": "operands beyond 64 bits are undefined",
    "bits.or": "operands beyond 64 bits are undefined",
    "bits.xor": "operands beyond 64 bits are undefined",
    "bits.negate": "operands beyond 64 bits are undefined or rounded",
    "bits.rsh": "operands beyond 64 bits or exponent-form shifts are undefined",
    # A value of the wrong type: OPA answers false or a result, regorus raises an error.
    "base64.is_valid": "null raises an error (OPA: false)",
    "json.is_valid": "null raises an error (OPA: false)",
    "yaml.is_valid": "null raises an error (OPA: false)",
    "net.cidr_is_valid": "null raises an error (OPA: false)",
    "semver.is_valid": "a number raises an error (OPA: false)",
    "json.verify_schema": "an invalid schema raises an error (OPA: [false, reason])",
    "intersection": "an empty set of sets from null raises an error (OPA: empty set)",
    "union": "an empty set of sets from null raises an error (OPA: empty set)",
    "graph.reachable_paths": "a node whose neighbours are not an array raises an error",
    "sprintf": "more arguments than verbs raise an error (OPA appends %!(EXTRA ...))",
    "base64url.decode": "invalid padding raises an error (OPA decodes leniently)",
    # Other answers.
    "object.subset": "arrays: an empty subset makes regorus panic, null gives false "
                     "(OPA: true, undefined)",
    "strings.count": "an empty substring makes regorus panic (OPA: length + 1)",
    "indexof": "an empty substring is found at 0 (OPA: undefined)",
    "indexof_n": "an empty substring is found everywhere (OPA: undefined)",
    "regex.split": "an empty pattern gives empty first and last parts",
    "regex.template_match": "a template without delimiters is false (OPA: undefined)",
    "json.match_schema": "no errors is null (OPA: [])",
    "upper": "full Unicode case mapping (straße: STRASSE, OPA: STRAßE)",
    "urlquery.decode": "spaces at the end and newlines are dropped",
    "urlquery.decode_object": "spaces at the end and newlines in keys are dropped",
    "yaml.marshal": "an empty string is written '' (OPA: \"\")",
}


@pytest.fixture(scope="module")
def corpus() -> tuple[list[tuple[str, list[Any]]], dict[str, Any], dict[int, Any]]:
    caps = capabilities()
    available = sorted(semantics.catalogue().supported - SKIP)
    calls: list[tuple[str, list[Any]]] = []
    for name in available:
        types = caps[name]
        seen = set()
        for args in itertools.chain(generated(name, types),
                                    (a for n, a in SHAPED if n == name)):
            key = json.dumps(args, sort_keys=True)
            if key not in seen:
                seen.add(key)
                calls.append((name, literal_numbers(args, types)))
    module = "package corpus\n\nimport rego.v1\n\n" + "\n".join(
        call_text(i, name, args, caps[name]) for i, (name, args) in enumerate(calls)) + "\n"
    cases = '{"cases": [' + ",".join(encode(args) for _, args in calls) + "]}"
    ours: dict[int, Any] = {}
    engine = regorus.Engine()
    engine.add_policy("corpus.rego", module)
    engine.set_input_json(cases)
    for i in range(len(calls)):
        try:
            ours[i] = json.loads(engine.eval_rule_as_json(f"data.corpus.c_{i}"))
        except RuntimeError as exc:
            ours[i] = {"<error>": str(exc).split("Stack backtrace")[0][-200:]}
        except BaseException as exc:  # a Rust panic (pyo3's PanicException)
            if "Panic" not in type(exc).__name__:
                raise
            ours[i] = {"<error>": f"panic: {exc}"[:200]}
    return calls, run_opa(module, cases), ours


def run_opa(module: str, cases: str) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpus.rego").write_text(module, encoding="utf-8")
        (Path(tmp) / "input.json").write_text(cases, encoding="utf-8")
        out = subprocess.run([str(OPA), "eval", "-f", "json", "-d", f"{tmp}/corpus.rego",
                              "-i", f"{tmp}/input.json", "data.corpus"],
                             check=True, capture_output=True, text=True).stdout
    value: dict[str, Any] = json.loads(out)["result"][0]["expressions"][0]["value"]
    return value


UNDEFINED = {"<undefined>": True}


def test_every_available_builtin_gives_opas_answers(corpus: Any) -> None:
    calls, theirs, ours = corpus
    differences: dict[str, list[str]] = {}
    for i, (name, args) in enumerate(calls):
        their = theirs.get(f"c_{i}", UNDEFINED)
        our = ours[i]
        if our == "<undefined>":
            our = UNDEFINED
        if our == their:
            continue
        if their == UNDEFINED and isinstance(our, dict) and "<error>" in our:
            continue  # OPA: a builtin error is undefined; regorus raises (documented)
        differences.setdefault(name, []).append(
            f"{name}({encode(args)[1:-1]}): OPA {json.dumps(their)[:120]}, "
            f"regorus {json.dumps(our, ensure_ascii=False)[:120]}")
    unexpected = {k: v for k, v in differences.items() if k not in KNOWN}
    assert not unexpected, "\n".join(line for v in unexpected.values() for line in v)
    stale = sorted(set(KNOWN) - set(differences))
    assert not stale, f"KNOWN lists builtins that no longer differ: {stale}"


def test_the_corpus_covers_every_available_builtin(corpus: Any) -> None:
    calls, _, _ = corpus
    covered = {name for name, _ in calls}
    assert covered == set(semantics.catalogue().supported) - SKIP
    assert len(calls) > 1000


def test_every_known_difference_is_documented() -> None:
    doc = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    section = doc.split("### Known differences of builtins")[1].split("\n## ")[0]
    for name in KNOWN:
        assert f"`{name}`" in section, name
