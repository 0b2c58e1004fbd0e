"""Vetting refuses what the embedded engine would decide differently from OPA, and only that.

The table runs magtape.engine.semantics on regorus' own syntax tree of each
snippet (a policy with that body): refused snippets must name the construct
and the line; accepted ones (integer arithmetic, exact comparisons, the
millicore rewrite the messages propose) must not be refused. Then the
issue's cases go through the real engine's load, as a ConfigMap would, and
the built-in policies, their tests and the shared library must raise
nothing. A policy that vetting accepts is decided as real OPA decides it
(``opa eval`` on the same input).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import regorus

from conftest import REPO
from magtape.engine import semantics
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.policy import PolicyModule
from opasupport import OPA

HEADER = "package kubernetes.admission.case\n\nimport rego.v1\n\n"


def findings(body: str, *libraries: tuple[str, str]) -> list[semantics.Refusal]:
    engine = regorus.Engine()
    for name, text in libraries:
        engine.add_policy(name, text)
    engine.add_policy("case.rego", HEADER + body)
    return semantics.vet(engine.get_ast_as_json(), ["case.rego"])


REFUSED = [
    # (id, body, what the message names, the line of the construct)
    ("literal-fractions", "x := 0.1 + 0.2\n", "`+` on a number that may not be", 5),
    ("sum-of-quantities",
     "total := sum([units.parse(c) | some c in input.cpus])\n", "`sum` over numbers", 5),
    ("quantity-through-a-variable",
     "t if {\n\ta := units.parse(input.a)\n\tb := a * 3\n\tb > 1\n}\n", "`*` on a number", 7),
    ("quantity-through-a-function",
     "q(x) := units.parse(x)\nt := q(input.a) + q(input.b)\n", "`+` on a number", 6),
    ("quantity-through-a-rule", "a := units.parse(input.a)\nb := a - 1\n", "`-` on a number", 6),
    ("division-then-arithmetic", "h := input.n / 3\nm := h % 2\n", "`%` on a number", 6),
    ("print-of-arithmetic", 'm := sprintf("%v", [0.1 + 0.2])\n', "`+` on a number", 5),
    ("print-of-exponent", "m := json.marshal(2e3)\n", "`json.marshal` prints a number", 5),
    ("print-of-to-number", 'm := sprintf("%v", [to_number(input.n)])\n',
     "`sprintf` prints a number", 5),
    ("print-of-quantity", 'm := json.marshal({"cpu": units.parse("500m")})\n',
     "`json.marshal` prints a number", 5),
    ("print-of-division", 'm := sprintf("%d", [input.n / 3])\n', "`sprintf` prints", 5),
    ("to-number-arithmetic", "x := to_number(input.a) + to_number(input.b)\n",
     "`+` on a number", 5),
    ("huge-integer", "x := 12345678901234567890123 + 1\n", "`+` on a number", 5),
    ("floor-of-a-fraction", "x := floor(units.parse(input.cpu))\n", "`floor` of a number", 5),
    ("parse-bytes", 'x := units.parse_bytes(input.size)\n', "`units.parse_bytes`", 5),
    ("missing-builtin", 'x if crypto.sha256(input.a) == "b"\n', "`crypto.sha256` is not", 5),
    ("missing-builtin-in-a-comprehension",
     "x := [h | some s in input.a; h := crypto.md5(s)]\n", "`crypto.md5` is not", 5),
    ("in-name-only", 'x := http.send({"method": "get", "url": input.url})\n',
     "exists there in name only (always undefined", 5),
    ("deprecated-builtin", 'x if re_match("a", input.a)\n', "`re_match` is a deprecated", 5),
    ("unknown-function", "x := no_such_function(1)\n", "unknown function `no_such_function`", 5),
    ("print-through-a-helper", "m(x) := json.marshal(x)\ny := m(2e3)\n",
     "`json.marshal` prints a number", 5),
    ("arithmetic-through-a-helper", "add(a, b) := a + b\ny := add(units.parse(input.a), 1)\n",
     "`+` on a number", 5),
    ("fractional-through-a-library",
     "import data.lib.q\n\nt := q.value(input.a) + 1\n", "`+` on a number", 7),
]

ACCEPTED = [
    ("integer-arithmetic", "x := input.replicas + 1\ny := x * 2 - 3\nz := y % 4\n"),
    ("integer-sum", "t := sum([p.containerPort | some p in input.ports]) + count(input.ports)\n"),
    ("millicores", "m := sum([round(units.parse(c) * 1000) | some c in input.cpus])\n"
                   "x if m > 300\n"),
    ("comparison-of-a-quantity", 'x if units.parse(input.mem) > units.parse("64Mi")\n'),
    ("comparison-with-a-decimal", "x if input.ratio > 0.3\n"),
    ("to-number-compared", 'x if to_number(input.port) >= 30000\n'),
    ("to-number-integer-arithmetic-printed-by-format-int",
     'm := format_int(round(units.parse(input.cpu) * 1000), 10)\n'),
    ("division-compared", "x if input.n / 2 > 3\n"),
    ("print-of-input", 'm := sprintf("%v is %d", [input.name, input.port])\n'),
    ("print-of-a-count", 'm := sprintf("%d items", [count(input.items)])\n'),
    ("round-of-a-quantity", "x := round(units.parse(input.cpu)) + 1\n"),
    ("exponent-compared", "x if input.n > 2e3\n"),
    ("defined-function", "f(x) := x + 1\ny := f(2)\n"),
    ("imported-function", "import data.lib.q\n\ny := q.value(input.a) > 1\n"),
    ("strings", 'x := concat("-", [lower(input.a), trim_space(input.b)])\n'),
]

LIBRARY = ("lib.rego", "package lib.q\n\nimport rego.v1\n\nvalue(x) := units.parse(x)\n")


@pytest.mark.parametrize(("body", "named", "line"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_what_the_engine_would_decide_differently_is_refused(body: str, named: str,
                                                             line: int) -> None:
    found = findings(body, LIBRARY)
    assert found, "not refused"
    assert named in found[0].message, found[0].message
    assert found[0].line == line
    assert found[0].filename == "case.rego"


@pytest.mark.parametrize("body", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_exact_constructs_are_accepted(body: str) -> None:
    assert findings(body, LIBRARY) == []


def test_every_refusal_names_the_alternative() -> None:
    for _, body, _, _ in REFUSED:
        message = findings(body, LIBRARY)[0].message
        assert any(fix in message for fix in (
            "OPA-sidecar", "use `regex.match`", "no module of the policy set defines it")), message


def test_the_builtin_policies_tests_and_library_raise_nothing() -> None:
    engine = regorus.Engine()
    files = sorted(str(p) for p in (REPO / "policies").rglob("*.rego"))
    for f in files:
        engine.add_policy(f, Path(f).read_text(encoding="utf-8"))
    assert semantics.vet(engine.get_ast_as_json(), files) == []


def test_the_builtin_catalogue_matches_the_engine() -> None:
    known = semantics.catalogue()
    assert "crypto.sha256" in known.missing and "regex.match" in known.supported
    assert "units.parse" in known.supported and "re_match" not in known.supported


# ------------------------------------------------------ through a real load
def policy(package: str, name: str, errcode: str, kind: str, rules: str) -> str:
    return (f"package kubernetes.admission.{package}\n\nimport rego.v1\n\n"
            f'policy_metadata := {{"name": "{name}", "severity": "HIGH", '
            f'"errcode": "{errcode}", "targets": {{"{kind}"}}}}\n\n'
            "matches if input.request.kind.kind in policy_metadata.targets\n\n" + rules)


def deny(errcode: str, name: str, condition: str, msg: str) -> str:
    return (f'deny contains {{"name": "{name}", "severity": "HIGH", "errcode": "{errcode}", '
            f'"msg": msg}} if {{\n{condition}\n\tmsg := {msg}\n}}\n')


CPU_TOTAL = policy(
    "cpu_total", "cpu-total", "MT9002", "Deployment",
    "total := sum([units.parse(c.resources.requests.cpu) |\n"
    "\tsome c in input.request.object.spec.template.spec.containers])\n\n"
    + deny("MT9002", "cpu-total", "\ttotal > 0.3",
           'sprintf("[FAIL] HIGH - CPU requests %v exceed 0.3 (MT9002)", [total])'))
SHA = policy("digest", "digest", "MT9003", "Pod",
             deny("MT9003", "digest",
                  '\tcrypto.sha256(input.request.object.metadata.name) == "x"',
                  '"[FAIL] HIGH - x (MT9003)"'))
PRINTS = policy("prints", "prints", "MT9004", "Pod",
                deny("MT9004", "prints", "\ttrue",
                     'concat("", ["[FAIL] HIGH - ", sprintf("%v", [0.1 + 0.2]), " ", '
                     'json.marshal(2e3), " ", sprintf("%v", [to_number("1e3")]), " ", '
                     'sprintf("%v", [units.parse("500m")]), " (MT9004)"])'))
MILLICORES = policy(
    "cpu_millis", "cpu-millis", "MT9005", "Deployment",
    "millis(q) := round(units.parse(q) * 1000) if is_string(q)\n\n"
    "total := sum([millis(c.resources.requests.cpu) |\n"
    "\tsome c in input.request.object.spec.template.spec.containers])\n\n"
    + deny("MT9005", "cpu-millis", "\ttotal > 300",
           'sprintf("[FAIL] HIGH - CPU requests %vm exceed 300m (MT9005)", [total])'))


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedEngine]:
    e = EmbeddedEngine(workers=1)
    yield e
    e.close()


def module(name: str, source: str) -> PolicyModule:
    return PolicyModule(f"configmap magtape-system/{name}", f"{name}/policy.rego", source)


def test_the_issue_cases_are_refused_at_load_and_the_integer_rewrite_loads(
        engine: EmbeddedEngine) -> None:
    mods = [module("cpu-total", CPU_TOTAL), module("digest", SHA), module("prints", PRINTS),
            module("cpu-millis", MILLICORES)]
    report = engine.load([*builtin_modules(), *mods], {})
    errors = {e.filename: e for e in report.errors}
    assert set(errors) == {"cpu-total/policy.rego", "digest/policy.rego", "prints/policy.rego"}
    assert errors["cpu-total/policy.rego"].line == 9
    assert "`sum` over numbers" in errors["cpu-total/policy.rego"].message
    assert "round(units.parse(q) * 1000)" in errors["cpu-total/policy.rego"].message
    assert errors["digest/policy.rego"].line == 10
    assert "`crypto.sha256` is not available" in errors["digest/policy.rego"].message
    assert "OPA-sidecar" in errors["digest/policy.rego"].message
    assert errors["prints/policy.rego"].line == 11
    assert "(and 4 more, on line 11)" in errors["prints/policy.rego"].message
    assert "cpu-millis" in {p.name for p in report.policies}


def deployment(*cpus: str) -> dict[str, object]:
    containers = [{"name": f"c{i}", "image": "nginx:1.25",
                   "resources": {"requests": {"cpu": cpu}}} for i, cpu in enumerate(cpus)]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "namespace": "default", "operation": "CREATE", "userInfo": {"username": "u"},
        "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "namespace": "default"},
                   "spec": {"template": {"spec": {"containers": containers}}}}}}


CPUS = [("100m", "200m"), ("100m", "201m"), ("0.1", "0.2"), ("0.15", "150m", "1m"),
        ("1", "250m"), ("300m",), ("0.0005", "299.5m")]


def test_the_millicore_rewrite_decides_as_opa(engine: EmbeddedEngine, tmp_path: Path) -> None:
    from magtape.review import parse_review

    engine.load([module("cpu-millis", MILLICORES)], {})
    (tmp_path / "p.rego").write_text(MILLICORES, encoding="utf-8")
    for cpus in CPUS:
        review = json.dumps(deployment(*cpus))
        (tmp_path / "input.json").write_text(review, encoding="utf-8")
        out = subprocess.run([str(OPA), "eval", "-d", str(tmp_path / "p.rego"), "-i",
                              str(tmp_path / "input.json"), "-f", "json",
                              "data.kubernetes.admission.cpu_millis.deny"],
                             check=True, capture_output=True, text=True).stdout
        expected = {d["msg"] for d in json.loads(out)["result"][0]["expressions"][0]["value"]}
        got = {v.msg for r in engine.evaluate(parse_review(review.encode())).results
               for v in r.violations}
        assert got == expected, cpus
