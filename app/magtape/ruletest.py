"""`magtape test`: run the Rego unit tests of policies with MagTape's engine.

Like ``opa test``, but on regorus, the engine that serves requests, so a test
that passes here passes in production too (and, because the built-in policies
are written engine-neutrally, under ``opa test`` as well: tests/test_ruletest.py
compares the two). Every rule whose name starts with ``test_`` in the ``.rego``
files below the given directories is a test; it passes when it is ``true``.

Tests are found in the sources with a regular expression (a test is a rule
whose name starts a line, ``test_x if { ... }``, in a module whose
``package`` line is a plain dotted path); such a name found elsewhere (inside
a raw string, say) shows up as a failing test, never as a silent pass.

Compiling and evaluating happen in a crash-isolated child process
(:class:`magtape.engine.child.Child`, ``python -m magtape.ruletest <MB>
--worker``) with a memory cap and a deadline per test: a test that loops,
blows the memory cap or crashes the engine fails on its own, and the run goes
on in a fresh child.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree

from magtape.engine.child import Child, ChildDied, ChildSide
from magtape.engine.policyset import package_of

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

DEFAULT_TIMEOUT_SECONDS = 30.0  # per test
DEFAULT_MEMORY_MB = 1024
COMPILE_TIMEOUT_SECONDS = 60.0
FORMATS = ("text", "json", "junit")

_TEST_RULE_RE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)
# regorus reports a location as "--> file:line:col" and the problem as "error: ...".
_LOCATION_RE = re.compile(r"-->\s*(.+?):(\d+):\d+")
_MESSAGE_RE = re.compile(r"^error:\s*(.+)$", re.MULTILINE)

# Child protocol: C(ompile) -> K(ok) | E(rrors); T(est) -> R(esult); V (coverage) -> R.
OP_COMPILE, OP_TEST, OP_COVERAGE = b"C", b"T", b"V"
OP_OK, OP_ERRORS, OP_RESULT = b"K", b"E", b"R"


class RuleTestError(Exception):
    """The tests could not be run at all (exit code 2); the message says why."""


@dataclass(frozen=True)
class RegoTest:
    """One ``test_*`` rule."""

    package: str
    name: str
    filename: str
    line: int = 0  # of the rule's first definition

    @property
    def location(self) -> str:
        return f"{self.filename}:{self.line}" if self.line else self.filename

    @property
    def qualified_name(self) -> str:
        return f"{self.package}.{self.name}"

    @property
    def rule_path(self) -> str:
        return f"data.{self.qualified_name}"


@dataclass(frozen=True)
class EngineMessage:
    """An error from the engine, reduced to where and what."""

    filename: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.filename is None:
            return self.message
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class TestResult:
    test: RegoTest
    passed: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Run:
    results: list[TestResult]
    coverage: list[dict[str, Any]] | None = None  # per file: path, covered, not_covered
    notes: list[str] = field(default_factory=list)


def parse_engine_error(text: str) -> EngineMessage:
    """File, line and message of a regorus error (its source excerpt left out)."""
    location = _LOCATION_RE.search(text)
    message = _MESSAGE_RE.search(text)
    first = message.group(1).strip() if message else (text.strip().splitlines() or ["?"])[0]
    if location is None:
        return EngineMessage(None, None, first)
    return EngineMessage(location.group(1), int(location.group(2)), first)


# --------------------------------------------------------------------------
# Discovery (parent process)


def find_rego_files(dirs: Iterable[str | Path]) -> list[Path]:
    """Every ``.rego`` file below ``dirs`` (or the files themselves), sorted, no duplicates;
    hidden ones left out by the same rule as the engine's (``sources.rego_files``)."""
    from magtape.engine.sources import rego_files

    found: dict[Path, None] = {}
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise RuleTestError(f"{str(root)!r} does not exist; pass a directory of .rego files")
        if root.is_file():
            found[root] = None
            continue
        found.update(dict.fromkeys(rego_files(root, tests=True)))
    return list(found)


def discover_tests(filename: str, source: str) -> list[RegoTest]:
    """The ``test_*`` rules of one module, in source order (see the module docstring)."""
    package = package_of(source)
    if package is None:
        return []
    seen: dict[str, int] = {}
    for rule in _TEST_RULE_RE.finditer(source):
        seen.setdefault(rule.group(1), source.count("\n", 0, rule.start()) + 1)
    return [RegoTest(package, name, filename, line) for name, line in seen.items()]


def builtin_library_files() -> list[Path]:
    """The shared library (policies/lib) that the built-in policies import.

    It is added to every run, so `magtape test my-policies/` works for policies
    that import ``data.magtape.lib``; only its tests are left out unless asked for.
    """
    from magtape.engine.sources import SourceError, builtin_policy_dir

    try:
        lib = builtin_policy_dir() / "lib"
    except SourceError:
        return []
    return sorted(lib.glob("*.rego")) if lib.is_dir() else []


def library_files_to_add(given: Sequence[Path]) -> list[Path]:
    """The built-in library files to compile with ``given``.

    Every library module whose package none of the ``given`` files declares
    (checking by package, not by path, lets an edited copy of the library
    under test replace the installed one instead of merging with it). Test
    helpers (``*_test.rego``, e.g. ``test.magtape.fixtures``) only when a given
    file refers to their package.
    """
    texts = [f.read_text(encoding="utf-8") for f in given]
    declared = {package_of(t) for t in texts}
    added = []
    for f in builtin_library_files():
        package = package_of(f.read_text(encoding="utf-8"))
        if package in declared:
            continue
        if f.name.endswith("_test.rego") and not any(f"data.{package}" in t for t in texts):
            continue
        added.append(f)
    return added


# --------------------------------------------------------------------------
# The child process: compile once, evaluate one test per request


class _Runner:
    def __init__(self) -> None:
        self._engine: Any = None

    def handle(self, op: bytes, payload: bytes) -> tuple[bytes, bytes]:
        import regorus

        if op == OP_COMPILE:
            job = json.loads(payload)
            engine = regorus.Engine()
            engine.set_enable_coverage(bool(job["coverage"]))
            errors = []
            for filename, source in job["files"]:
                try:
                    engine.add_policy(filename, source)
                except RuntimeError as exc:
                    errors.append(asdict(parse_engine_error(str(exc))))
            if errors:
                return OP_ERRORS, json.dumps(errors).encode()
            self._engine = engine
            # What loading these policies in MagTape would refuse (magtape.engine.semantics).
            from magtape.engine import semantics

            refusals = [asdict(f) for f in semantics.vet(engine.get_ast_as_json(),
                                                         job.get("vet", []))]
            return OP_OK, json.dumps(refusals).encode()
        if op == OP_TEST:
            try:
                value = self._engine.eval_rule(payload.decode())
            except RuntimeError as exc:
                error = parse_engine_error(str(exc))
                return OP_RESULT, json.dumps({"passed": False, "error": asdict(error)}).encode()
            detail = ("" if value is True else
                      "undefined (a condition of the test did not hold)" if value is None
                      else f"evaluated to {json.dumps(value, default=str)}, not true")
            return OP_RESULT, json.dumps({"passed": value is True, "detail": detail}).encode()
        if op == OP_COVERAGE:
            report = json.loads(self._engine.get_coverage_report_as_json())
            files = [{"path": f["path"], "covered": f["covered"],
                      "not_covered": f["not_covered"]} for f in report.get("files", [])]
            return OP_RESULT, json.dumps(files).encode()
        return OP_ERRORS, json.dumps([{"filename": None, "line": None,
                                       "message": f"unknown request {op!r}"}]).encode()


def _worker_main(memory_mb: int) -> None:
    side = ChildSide(memory_mb)
    runner = _Runner()
    try:
        while (frame := side.read()) is not None:
            side.write(*runner.handle(frame.op, frame.payload))
    except MemoryError:
        sys.exit(3)  # what magtape.engine.child reads as "memory cap exceeded"


# --------------------------------------------------------------------------
# The parent: one child at a time, replaced when a test kills it


class _Session:
    def __init__(self, files: Sequence[Path], coverage: bool, memory_mb: int,
                 vet: Sequence[Path] = ()) -> None:
        self._job = json.dumps({"files": [[str(f), f.read_text(encoding="utf-8")]
                                          for f in files], "coverage": coverage,
                                "vet": [str(f) for f in vet]}).encode()
        self._memory_mb = memory_mb
        self._child: Child | None = None
        self.replaced = 0
        self.refusals: list[dict[str, Any]] | None = None  # from the first compile

    def _start(self) -> Child:
        child = Child("magtape.ruletest", self._memory_mb, ["--worker"])
        try:
            frame = child.call(OP_COMPILE, self._job, COMPILE_TIMEOUT_SECONDS)
        except ChildDied as exc:
            raise RuleTestError(f"the Rego engine failed while loading the modules: "
                                f"{exc.detail}") from None
        if frame.op == OP_ERRORS:
            child.kill()
            errors = [str(EngineMessage(**e)) for e in json.loads(frame.payload)]
            raise RuleTestError("a module does not compile:\n  " + "\n  ".join(errors))
        if self.refusals is None and frame.payload:
            self.refusals = json.loads(frame.payload)
        return child

    def run(self, test: RegoTest, timeout: float) -> TestResult:
        if self._child is None or self._child.dead:
            self._child = self._start()
        started = time.monotonic()
        try:
            frame = self._child.call(OP_TEST, test.rule_path.encode(), timeout)
        except ChildDied as exc:
            self.replaced += 1
            return TestResult(test, False, f"the engine stopped: {exc.detail}",
                              time.monotonic() - started)
        answer = json.loads(frame.payload)
        detail = answer.get("detail", "")
        if "error" in answer:
            detail = f"evaluation error: {EngineMessage(**answer['error'])}"
        return TestResult(test, bool(answer["passed"]), detail, time.monotonic() - started)

    def coverage(self) -> list[dict[str, Any]] | None:
        if self._child is None or self._child.dead:
            return None
        try:
            frame = self._child.call(OP_COVERAGE, b"", COMPILE_TIMEOUT_SECONDS)
        except ChildDied:
            return None
        files: list[dict[str, Any]] = json.loads(frame.payload)
        return files

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()


def run_tests(files: Sequence[Path], tests: Sequence[RegoTest],
              timeout: float = DEFAULT_TIMEOUT_SECONDS, coverage: bool = False,
              memory_mb: int = DEFAULT_MEMORY_MB, vet: Sequence[Path] = ()) -> Run:
    """Compile ``files`` and run ``tests`` in a child process; ``vet``: the policy
    files whose refusals at load (docs/policies.md, "Exact numbers") become notes.

    Raises :class:`RuleTestError` when a module does not compile (the message
    names each file and line once). A test that times out or takes the
    engine down fails on its own; the next one runs in a new child.
    """
    session = _Session(files, coverage, memory_mb, vet)
    try:
        results = [session.run(t, timeout) for t in tests]
        run = Run(results)
        for f in session.refusals or []:
            run.notes.append(f"{f['filename']}:{f['line']}: MagTape refuses this policy at "
                             f"load: {f['message']}")
        if coverage:
            run.coverage = session.coverage()
            if session.replaced or run.coverage is None:
                run.notes.append("coverage covers only the tests run after the engine "
                                 "was last restarted")
        return run
    finally:
        session.close()


# --------------------------------------------------------------------------
# Reports


def coverage_lines(files: list[dict[str, Any]], given: set[str]) -> list[dict[str, Any]]:
    """Per policy file (test files left out): lines covered, of lines with code.

    regorus reports only the files a test evaluated; a given file missing
    from its report is shown as 0% covered.
    """
    reported = {f["path"]: f for f in files}
    out = []
    for path in sorted(given):
        if path.endswith("_test.rego"):
            continue
        f = reported.get(path, {"covered": [], "not_covered": []})
        covered, missed = len(f["covered"]), len(f["not_covered"])
        total = covered + missed
        out.append({"file": path, "covered": covered, "lines": total,
                    "percent": round(100.0 * covered / total, 1) if total else 0.0,
                    "not_covered": f["not_covered"], "evaluated": path in reported})
    return out


def write_text(run: Run, out: TextIO, verbose: bool, coverage: list[dict[str, Any]]) -> None:
    shown_errors: set[str] = set()
    for r in run.results:
        if r.passed and not verbose:
            continue
        if r.passed:
            out.write(f"PASS: {r.test.qualified_name}\n")
            continue
        detail = r.detail
        if detail.startswith("evaluation error: "):
            # One broken rule fails every test that reads it: say it once.
            if detail in shown_errors:
                detail = "the same evaluation error as above"
            shown_errors.add(r.detail)
        out.write(f"FAIL: {r.test.qualified_name}  ({detail}; {r.test.location})\n")
    for f in coverage:
        how = (f"{f['covered']} of {f['lines']} lines" if f["evaluated"]
               else "no test evaluates it")
        out.write(f"coverage: {f['file']}: {f['percent']:g}% ({how})\n")
    for note in run.notes:
        out.write(f"note: {note}\n")
    failed = sum(not r.passed for r in run.results)
    out.write(f"{len(run.results) - failed} passed, {failed} failed\n")


def write_json(run: Run, out: TextIO, coverage: list[dict[str, Any]] | None) -> None:
    failed = sum(not r.passed for r in run.results)
    doc: dict[str, Any] = {
        "summary": {"total": len(run.results), "passed": len(run.results) - failed,
                    "failed": failed},
        "tests": [{"package": r.test.package, "name": r.test.name, "file": r.test.filename,
                   "line": r.test.line, "passed": r.passed, "detail": r.detail,
                   "duration_ms": round(r.seconds * 1000, 3)} for r in run.results],
    }
    if coverage is not None:
        doc["coverage"] = coverage
    if run.notes:
        doc["notes"] = run.notes
    json.dump(doc, out, indent=2)
    out.write("\n")


def write_junit(run: Run, out: TextIO) -> None:
    suites = ElementTree.Element("testsuites", name="magtape test")
    by_package: dict[str, list[TestResult]] = {}
    for r in run.results:
        by_package.setdefault(r.test.package, []).append(r)
    for package, results in by_package.items():
        failures = sum(not r.passed for r in results)
        suite = ElementTree.SubElement(
            suites, "testsuite", name=package, tests=str(len(results)),
            failures=str(failures), errors="0",
            time=f"{sum(r.seconds for r in results):.3f}")
        for r in results:
            case = ElementTree.SubElement(suite, "testcase", classname=package,
                                          name=r.test.name, file=r.test.filename,
                                          time=f"{r.seconds:.3f}")
            if r.test.line:
                case.set("line", str(r.test.line))
            if not r.passed:
                ElementTree.SubElement(case, "failure", message=r.detail[:500]).text = r.detail
    ElementTree.indent(suites)
    out.write(ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


# --------------------------------------------------------------------------
# Entry points


def collect(dirs: Sequence[str], run_filter: str | None = None, need_tests: bool = True
            ) -> tuple[list[Path], list[RegoTest]]:
    """The files to compile (given ones plus the library) and the tests to run
    (none is an error unless not ``need_tests``: --against-opa has samples to compare)."""
    given = find_rego_files(dirs)
    if not given:
        raise RuleTestError("no .rego files found under " + ", ".join(dirs))
    found: dict[str, RegoTest] = {}  # a package may span files: one test per rule name
    for f in given:
        for test in discover_tests(str(f), f.read_text(encoding="utf-8")):
            found.setdefault(test.rule_path, test)
    tests = list(found.values())
    if not tests and need_tests:
        raise RuleTestError("no test_* rules found under " + ", ".join(dirs)
                            + "; name each test rule test_<something>")
    if run_filter is not None:
        try:
            pattern = re.compile(run_filter)
        except re.error as exc:
            raise RuleTestError(f"--run {run_filter!r} is not a regular expression: "
                                f"{exc}") from None
        tests = [t for t in tests if pattern.search(t.rule_path)]
        if not tests:
            raise RuleTestError(f"no test matches --run {run_filter!r} (it is searched in "
                                "names like data.test.my_policy.test_something)")
    library = library_files_to_add(given)
    missing = missing_test_helpers([*given, *library])
    if missing:
        raise RuleTestError(
            "the tests import " + ", ".join(missing) + ", which this installation of "
            "MagTape does not ship (test helpers stay in the source repository): copy "
            "policies/lib/fixtures_test.rego from it next to your tests")
    return [*given, *library], tests


# Test-helper packages of the built-in library (policies/lib/*_test.rego).
_HELPER_REF_RE = re.compile(r"\bdata\.(test\.magtape\.[A-Za-z_]\w*)")


def missing_test_helpers(files: Sequence[Path]) -> list[str]:
    """Helper packages (``data.test.magtape.*``) referred to but defined by no file."""
    texts = [f.read_text(encoding="utf-8") for f in files]
    declared = {package_of(t) for t in texts}
    referred = {m.group(1) for t in texts for m in _HELPER_REF_RE.finditer(t)}
    return sorted(p for p in referred if p not in declared)


def run(dirs: list[str], verbose: bool, out: TextIO,
        timeout: float = DEFAULT_TIMEOUT_SECONDS, *, run_filter: str | None = None,
        output: str = "text", coverage: bool = False, against_opa: str | None = None) -> int:
    """Run the tests below ``dirs``; print the results to ``out``; return the exit code.

    ``against_opa`` (the ``opa`` binary, or "" for the one on PATH): then also
    compare the tests and the samples with real OPA (magtape.againstopa) and
    exit 1 on any difference.
    """
    from magtape import againstopa

    try:
        opa = againstopa.find_opa(against_opa or None) if against_opa is not None else None
        files, tests = collect(dirs, run_filter, need_tests=opa is None)
        policies = [f for f in find_rego_files(dirs) if not f.name.endswith("_test.rego")]
        result = run_tests(files, tests, timeout, coverage, vet=policies)
    except (RuleTestError, againstopa.AgainstOpaError, OSError, UnicodeDecodeError) as exc:
        out.write(f"error: {exc}\n")
        return EXIT_ERROR
    # Coverage of the files under test, not of the library added to them.
    lines = (coverage_lines(result.coverage or [], {str(f) for f in find_rego_files(dirs)})
             if coverage else None)
    if output == "json":
        write_json(result, out, lines)
    elif output == "junit":
        write_junit(result, out)
    else:
        write_text(result, out, verbose, lines or [])
    failed = any(not r.passed for r in result.results)
    if opa is not None:
        try:
            differences = againstopa.compare(
                dirs, files, {r.test.rule_path: r.passed for r in result.results}, opa,
                out if output == "text" else sys.stderr)
        except (againstopa.AgainstOpaError, OSError, subprocess.TimeoutExpired) as exc:
            out.write(f"error: {exc}\n")
            return EXIT_ERROR
        failed = failed or differences > 0
    return EXIT_FAILED if failed else EXIT_PASSED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="magtape test",
        description="Run the test_* rules of Rego policies with MagTape's engine (regorus), "
                    "as `opa test` does with OPA. The shared library (policies/lib) is "
                    "added unless the directories define its packages themselves.")
    parser.add_argument("dirs", nargs="*", metavar="DIR", default=["."],
                        help="directories (or files) holding .rego policies and their "
                             "*_test.rego tests (default: the current directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    parser.add_argument("-r", "--run", metavar="REGEX", dest="run_filter",
                        help="run only the tests whose name (data.<package>.<rule>) "
                             "matches REGEX, as `opa test --run`")
    parser.add_argument("-o", "--output", choices=FORMATS, default="text",
                        help="report format (default %(default)s)")
    parser.add_argument("--coverage", action="store_true",
                        help="report, per policy file, the lines the tests evaluated")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds one test may run before it fails and the engine is "
                             "restarted (default %(default)g)")
    parser.add_argument("--against-opa", action="store_true",
                        help="also run the tests with real OPA (`opa` on PATH) and decide "
                             "every samples/*.yaml with both engines; print every difference "
                             "and exit 1 on any")
    parser.add_argument("--opa", metavar="PATH",
                        help="the OPA binary for --against-opa (default: opa on PATH)")
    args = parser.parse_args(argv)
    if args.opa and not args.against_opa:
        parser.error("--opa is only used with --against-opa")
    return run(args.dirs, args.verbose, sys.stdout, args.timeout, run_filter=args.run_filter,
               output=args.output, coverage=args.coverage,
               against_opa=(args.opa or "") if args.against_opa else None)


if __name__ == "__main__":
    # magtape.engine.child starts `python -m magtape.ruletest <memory MB> --worker`.
    if sys.argv[2:3] == ["--worker"]:
        _worker_main(int(sys.argv[1]))
        sys.exit(EXIT_PASSED)
    sys.exit(main())
