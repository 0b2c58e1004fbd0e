"""`magtape test`: run the Rego unit tests of policies with the embedded engine.

Like ``opa test``, but on rego-cpp (regopy), the engine that serves requests,
so a test that passes here passes in production too. Every rule whose name
starts with ``test_`` in the ``.rego`` files below the given directories is a
test; it passes when it evaluates to ``true``.

rego-cpp has no API to list rules, so packages and test names are read from
the sources with a regular expression: a test must be a rule whose name starts
a line (``test_x if { ... }``), in a module whose ``package`` line uses a plain
dotted path. Such a name found somewhere else (inside a raw string, say) shows
up as a failing test, never as a silent pass.

Compiling and evaluating happen in a child process (``python -m
magtape.ruletest --worker``): rego-cpp 1.5 aborts the whole process on some
inputs (for example a test that replaces the whole ``input`` with ``with
input as`` while the rule under test calls a builtin), and the parent must
still be able to say what happened. The child reports JSON lines on its
stdout and sends rego-cpp's own printed reports to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from magtape.engine.policyset import package_of
from magtape.engine.vet import child_env

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

# Generous: the whole built-in suite runs in a few seconds. A test that makes
# rego-cpp loop (it does on some unsafe variables) is stopped after this long.
DEFAULT_TIMEOUT_SECONDS = 300.0

_TEST_RULE_RE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)


class RuleTestError(Exception):
    """The tests could not be run at all (exit code 2); the message says why."""


@dataclass(frozen=True)
class RegoTest:
    """One ``test_*`` rule."""

    package: str
    name: str
    filename: str

    @property
    def qualified_name(self) -> str:
        return f"{self.package}.{self.name}"

    @property
    def entrypoint(self) -> str:
        return f"{self.package.replace('.', '/')}/{self.name}"


@dataclass(frozen=True)
class CompileError:
    filename: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class TestResult:
    test: RegoTest
    passed: bool
    detail: str = ""


# --------------------------------------------------------------------------
# Discovery (parent process)


def find_rego_files(dirs: Iterable[str | Path]) -> list[Path]:
    """Every ``.rego`` file below ``dirs`` (or the files themselves), sorted, no duplicates."""
    found: dict[Path, None] = {}
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise RuleTestError(f"{str(root)!r} does not exist; pass a directory of .rego files")
        if root.is_file():
            found[root] = None
            continue
        for f in sorted(root.rglob("*.rego")):
            if not any(part.startswith(".") for part in f.relative_to(root).parts):
                found[f] = None
    return list(found)


def discover_tests(filename: str, source: str) -> list[RegoTest]:
    """The ``test_*`` rules of one module, in source order (see the module docstring)."""
    package = package_of(source)
    if package is None:
        return []
    seen: dict[str, None] = {}
    for rule in _TEST_RULE_RE.finditer(source):
        seen[rule.group(1)] = None
    return [RegoTest(package, name, filename) for name in seen]


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
    file refers to their package: each extra function name is one more chance
    of the rego-cpp arity clash described below.
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
# Compilation and evaluation (child process)


def compile_errors(exc: Exception, sources: dict[str, str]) -> list[CompileError]:
    """(file, line, message) for each distinct error in a RegoError."""
    from magtape.engine.rego import locate_error

    errors: list[CompileError] = []
    for loc in locate_error(str(exc), sources):
        error = CompileError(loc.filename or "<policy set>", loc.line, loc.message)
        if error not in errors:  # rego-cpp reports some errors once per pass
            errors.append(error)
    return errors


def _emit(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event) + "\n")
    out.flush()  # the parent needs every line written before a possible crash


def worker(job: dict[str, Any], out: TextIO) -> None:
    """Compile ``job["files"]`` and evaluate ``job["tests"]``, reporting JSON lines."""
    from regopy import Interpreter, RegoError

    sources = {f: Path(f).read_text(encoding="utf-8") for f in job["files"]}
    interpreter = Interpreter()
    for filename, source in sources.items():
        _emit(out, {"event": "compiling", "file": filename})
        try:
            interpreter.add_module(filename, source)
        except RegoError as exc:
            for err in compile_errors(exc, sources):
                _emit(out, {"event": "compile_error", "file": err.filename, "line": err.line,
                            "message": err.message})
            return
    entrypoints = [t["entrypoint"] for t in job["tests"]]
    _emit(out, {"event": "compiling", "file": None})
    try:
        bundle = interpreter.build(None, entrypoints)
    except RegoError as exc:
        for err in compile_errors(exc, sources):
            _emit(out, {"event": "compile_error", "file": err.filename, "line": err.line,
                        "message": err.message})
        return
    _emit(out, {"event": "compiled"})
    for test in job["tests"]:
        _emit(out, {"event": "start", "entrypoint": test["entrypoint"]})
        passed, detail = False, ""
        try:
            output = interpreter.query_bundle_entrypoint(bundle, test["entrypoint"])
            text = str(output)
            if not output.ok():
                detail = f"evaluation error: {text}"
            elif text == "undefined":
                detail = "undefined (a condition of the test did not hold)"
            else:
                value = json.loads(text).get("expressions", [None])[0]
                passed = value is True
                detail = "" if passed else f"evaluated to {json.dumps(value)}, not true"
        except Exception as exc:  # a malformed output must fail one test, not the run
            detail = f"evaluation error: {type(exc).__name__}: {exc}"
        _emit(out, {"event": "result", "entrypoint": test["entrypoint"], "passed": passed,
                    "detail": detail})


# --------------------------------------------------------------------------
# The parent: run the worker and report


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def run_tests(files: Sequence[Path], tests: Sequence[RegoTest],
              timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[TestResult]:
    """Compile ``files`` and run ``tests`` in a child process.

    Raises :class:`RuleTestError` when a module does not compile, or the engine
    crashes or times out; the message names the file (and line) or the test.
    """
    job = {"files": [str(f) for f in files],
           "tests": [{"entrypoint": t.entrypoint} for t in tests]}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "magtape.ruletest", "--worker"],
            input=json.dumps(job), capture_output=True, text=True, env=child_env(),
            timeout=timeout, check=False,
        )
        stdout, stderr, returncode = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = _text(exc.stdout)
        stderr, returncode = _text(exc.stderr), None
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]

    failures = [e for e in events if e["event"] == "compile_error"]
    if failures:
        lines = [str(CompileError(e["file"], e["line"], e["message"])) for e in failures]
        raise RuleTestError("a module does not compile:\n  " + "\n  ".join(lines))

    by_entrypoint = {t.entrypoint: t for t in tests}
    results = [TestResult(by_entrypoint[e["entrypoint"]], e["passed"], e["detail"])
               for e in events if e["event"] == "result"]
    if returncode == 0 and len(results) == len(tests):
        return results

    raise RuleTestError(_crash_report(files, tests, events, returncode, stderr, timeout))


# Two known ways to make rego-cpp 1.5 abort: replacing the whole input in a
# test, and one function name defined with different numbers of arguments in
# different packages (e.g. `pod(x)` in a test and `pod(x, y)` in a helper).
_WITH_INPUT_RE = re.compile(r"\bwith\s+input\s+as\b")
_FUNCTION_RE = re.compile(r"^([A-Za-z_]\w*)\(([^)]*)\)\s*(?::=|=|if\b|\{)", re.MULTILINE)


def arity_clashes(files: Sequence[Path]) -> list[str]:
    """Functions defined with different numbers of arguments, with where."""
    seen: dict[str, dict[int, str]] = {}
    for f in files:
        text = f.read_text(encoding="utf-8")
        for m in _FUNCTION_RE.finditer(text):
            arity = len([a for a in m.group(2).split(",") if a.strip()])
            line = text.count("\n", 0, m.start()) + 1
            seen.setdefault(m.group(1), {}).setdefault(arity, f"{f}:{line}")
    return [f"{name}/{arity} at {where}" for name, arities in sorted(seen.items())
            if len(arities) > 1 for arity, where in sorted(arities.items())]


def _crash_report(files: Sequence[Path], tests: Sequence[RegoTest], events: list[dict[str, Any]],
                  returncode: int | None, stderr: str, timeout: float) -> str:
    """Say where the child died or hung, from the last thing it announced."""
    how = (f"did not finish within {timeout:g}s" if returncode is None
           else f"crashed ({_describe_exit(returncode)})")
    started = [e for e in events if e["event"] in ("compiling", "compiled", "start")]
    last = started[-1] if started else None
    by_entrypoint = {t.entrypoint: t for t in tests}
    library = set(builtin_library_files())
    if last is not None and last["event"] == "start":
        what = f"the Rego engine {how} while evaluating "
        what += by_entrypoint[last["entrypoint"]].qualified_name
    elif last is not None and last["event"] == "compiling" and last["file"]:
        what = f"the Rego compiler {how} while loading {last['file']}"
    else:
        own = [str(f) for f in files if f not in library]
        what = f"the Rego compiler {how} while loading " + ", ".join(own)
        if len(own) < len(files):
            what += " (with the built-in library)"
    suspects = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        suspects += [f"{f}:{text.count(chr(10), 0, m.start()) + 1}"
                     for m in _WITH_INPUT_RE.finditer(text)]
    if suspects:
        what += ("\nrego-cpp aborts on tests that replace the whole input; write "
                 "`with input.request as ...` instead of `with input as ...` at:\n  "
                 + "\n  ".join(suspects))
    clashes = arity_clashes(files)
    if clashes:
        what += ("\nrego-cpp aborts when one function name takes different numbers of "
                 "arguments in different packages; rename one of:\n  " + "\n  ".join(clashes))
    tail = "\n".join(stderr.strip().splitlines()[-3:])
    return what + (f"\nengine output:\n{tail}" if tail else "")


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def run(dirs: list[str], verbose: bool, out: TextIO,
        timeout: float = DEFAULT_TIMEOUT_SECONDS) -> int:
    """Run every test below ``dirs``; print the results to ``out``; return the exit code."""
    try:
        given = find_rego_files(dirs)
        found: dict[str, RegoTest] = {}  # a package may span files: one test per rule name
        for f in given:
            for test in discover_tests(str(f), f.read_text(encoding="utf-8")):
                found.setdefault(test.entrypoint, test)
        tests = list(found.values())
        if not given:
            raise RuleTestError("no .rego files found under " + ", ".join(dirs))
        if not tests:
            raise RuleTestError("no test_* rules found under " + ", ".join(dirs)
                                + "; name each test rule test_<something>")
        library = library_files_to_add(given)
        results = run_tests([*given, *library], tests, timeout)
    except (RuleTestError, OSError, UnicodeDecodeError) as exc:
        out.write(f"error: {exc}\n")
        return EXIT_ERROR

    failed = [r for r in results if not r.passed]
    for r in results:
        if verbose or not r.passed:
            status = "PASS" if r.passed else "FAIL"
            detail = f"  ({r.detail}; {r.test.filename})" if not r.passed else ""
            out.write(f"{status}: {r.test.qualified_name}{detail}\n")
    out.write(f"{len(results) - len(failed)} passed, {len(failed)} failed\n")
    return EXIT_FAILED if failed else EXIT_PASSED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="magtape test",
        description="Run the test_* rules of Rego policies with the embedded engine.")
    parser.add_argument("dirs", nargs="*", metavar="DIR",
                        help="directories (or files) of .rego sources; "
                             "default: the built-in policies")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every test")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="seconds before the engine is stopped (default %(default)g)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        # rego-cpp prints its own reports on file descriptor 1: keep the
        # protocol on a private copy of it and send everything else to stderr.
        protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        worker(json.load(sys.stdin), protocol)
        return EXIT_PASSED
    dirs = args.dirs
    if not dirs:
        from magtape.engine.sources import SourceError, builtin_policy_dir

        try:
            dirs = [str(builtin_policy_dir())]
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    return run(dirs, args.verbose, sys.stdout, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
