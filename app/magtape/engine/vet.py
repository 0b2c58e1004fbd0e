"""Compiles policy modules in a child process before the server trusts them.

rego-cpp can abort the whole process on some inputs (for example a rule
evaluated under ``with input as {...}`` that calls a builtin). A policy
ConfigMap is not trusted code, so every new module set is first compiled in a
child process: one policy at a time, with a smoke evaluation of ``deny`` per
target kind. A crash is pinned on the policy being compiled at the time and
reported like a compile error; the others are compiled again without it. The
parent then builds only modules the child has proven safe. Results are cached
by module content, so data-only reloads skip the child entirely.

The child speaks JSON lines on a private file descriptor: rego-cpp prints its
own error reports to stdout, which the child sends to stderr instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from magtape.engine.policyset import Grouped, PolicyGroup
from magtape.policy import PolicyLoadError, PolicyModule

CHILD_TIMEOUT_SECONDS = 120.0
_CRASH = ("the Rego compiler crashed while compiling this policy (a rego-cpp defect); "
          "simplify the policy, e.g. tests must use `with input.request as` rather than "
          "`with input as`")


@dataclass(frozen=True)
class VetResult:
    libraries: tuple[PolicyModule, ...]  # library modules that compile
    policies: tuple[tuple[PolicyGroup, Any], ...]  # (group, raw policy_metadata) that compile
    errors: tuple[PolicyLoadError, ...]


_cache: OrderedDict[str, VetResult] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 8


def vet(grouped: Grouped) -> VetResult:
    """Vet ``grouped`` in child processes (cached by content)."""
    key = _digest(grouped)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    result = _vet_uncached(grouped)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _vet_uncached(grouped: Grouped) -> VetResult:
    errors = [PolicyLoadError(m.origin, m.filename, "no `package` clause found")
              for m in grouped.unparsable]
    pending = list(grouped.policies)
    libraries = list(grouped.libraries)
    done: dict[str, tuple[PolicyGroup, Any]] = {}
    # Each round either finishes or pins a crash on one item and retries the rest.
    for _ in range(len(pending) + len(libraries) + 1):
        report = _run_child(libraries, pending)
        errors.extend(report.lib_errors)
        bad_files = {e.filename for e in report.lib_errors}
        libraries = [m for m in libraries if m.filename not in bad_files]
        by_pkg = {g.package: g for g in pending}
        for pkg, outcome in report.results.items():
            group = by_pkg[pkg]
            if outcome["ok"]:
                done[pkg] = (group, outcome["metadata"])
            else:
                errors.extend(_group_errors(group, outcome["errors"]))
        finished = set(report.results)
        if report.crashed_on is None:
            break
        crashed = report.crashed_on
        if crashed.startswith("lib:"):
            filename = crashed[4:]
            lib = next(m for m in libraries if m.filename == filename)
            errors.append(PolicyLoadError(lib.origin, lib.filename, _CRASH))
            libraries.remove(lib)
        else:
            group = by_pkg[crashed]
            errors.append(PolicyLoadError(group.origin, group.modules[0].filename, _CRASH,
                                          policy=crashed))
            finished.add(crashed)
        pending = [g for g in pending if g.package not in finished]
    return VetResult(tuple(libraries), tuple(done[p] for p in sorted(done)), tuple(errors))


def _group_errors(group: PolicyGroup, raw: list[dict[str, Any]]) -> list[PolicyLoadError]:
    origins = {m.filename: m.origin for m in group.modules}
    return [PolicyLoadError(origin=origins.get(e["filename"], group.origin),
                            filename=e["filename"] or group.modules[0].filename,
                            message=e["message"], line=e["line"], policy=group.package)
            for e in raw]


@dataclass
class _ChildReport:
    lib_errors: list[PolicyLoadError]
    results: dict[str, dict[str, Any]]
    crashed_on: str | None


def _run_child(libraries: list[PolicyModule], groups: list[PolicyGroup]) -> _ChildReport:
    request = {
        "libraries": [_module_json(m) for m in libraries],
        "policies": [{"package": g.package, "modules": [_module_json(m) for m in g.modules]}
                     for g in groups],
    }
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "magtape.engine.vet", str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,), env=child_env())
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "r", encoding="utf-8") as results:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        lines = results.read().splitlines()
    proc.wait(timeout=CHILD_TIMEOUT_SECONDS)
    report = _ChildReport([], {}, None)
    current: str | None = None
    finished = False
    lib_modules = {m.filename: m for m in libraries}
    for line in lines:
        msg = json.loads(line)
        if "begin" in msg:
            current = msg["begin"]
        elif "lib_error" in msg:
            e = msg["lib_error"]
            mod = lib_modules.get(e["filename"])
            report.lib_errors.append(PolicyLoadError(
                origin=mod.origin if mod else e["filename"], filename=e["filename"],
                message=e["message"], line=e["line"]))
        elif "package" in msg:
            report.results[msg["package"]] = msg
            current = None
        elif msg.get("done"):
            finished = True
    if not finished:
        report.crashed_on = current or "lib:" + (libraries[0].filename if libraries else "?")
    return report


def child_env() -> dict[str, str]:
    """The environment of a child ``python -m magtape...``: this very package
    importable, whether installed or run from a source tree."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def _module_json(m: PolicyModule) -> dict[str, str]:
    return {"origin": m.origin, "filename": m.filename, "source": m.source}


def _digest(grouped: Grouped) -> str:
    h = hashlib.sha256()
    for m in (*grouped.libraries, *(m for g in grouped.policies for m in g.modules),
              *grouped.unparsable):
        for part in (m.origin, m.filename, m.source):
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- child side

def _child_main(fd: int) -> None:
    from regopy import RegoError

    from magtape.engine.rego import Evaluator, compile_bundle, entrypoint, locate_error

    out = os.fdopen(fd, "w", encoding="utf-8")
    os.dup2(2, 1)  # rego-cpp's own reports go to stderr, not into the protocol

    def emit(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    request = json.load(sys.stdin)
    libs = [PolicyModule(**m) for m in request["libraries"]]
    # Libraries first, together; drop the files an error names, until they compile.
    while libs:
        emit({"begin": "lib:" + libs[0].filename})
        try:
            compile_bundle(libs, {}, [], query="true")
            break
        except RegoError as exc:
            sources = {m.filename: m.source for m in libs}
            locs = locate_error(exc, sources)
            bad = {loc.filename for loc in locs if loc.filename in sources} or {libs[0].filename}
            for loc in locs:
                emit({"lib_error": {"filename": loc.filename or libs[0].filename,
                                    "line": loc.line, "message": loc.message}})
            libs = [m for m in libs if m.filename not in bad]

    evaluator = Evaluator()
    for pol in request["policies"]:
        pkg = pol["package"]
        modules = [PolicyModule(**m) for m in pol["modules"]]
        emit({"begin": pkg})
        sources = {m.filename: m.source for m in (*libs, *modules)}
        deny_ep, meta_ep = entrypoint(pkg, "deny"), entrypoint(pkg, "policy_metadata")
        try:
            bundle = compile_bundle([*libs, *modules], {}, [deny_ep, meta_ep])
        except RegoError as exc:
            emit({"package": pkg, "ok": False, "errors": [
                {"filename": loc.filename, "line": loc.line, "message": loc.message}
                for loc in locate_error(exc, sources)]})
            continue
        error = _smoke(evaluator, bundle, deny_ep, meta_ep)
        if isinstance(error, str):
            emit({"package": pkg, "ok": False,
                  "errors": [{"filename": modules[0].filename, "line": None, "message": error}]})
        else:
            emit({"package": pkg, "ok": True, "metadata": error})
    emit({"done": True})


def _smoke(evaluator: Any, bundle: Any, deny_ep: str, meta_ep: str) -> Any:
    """Return the raw metadata, or a string saying why the policy cannot run."""
    from magtape.engine.rego import RegoQueryError

    try:
        evaluator.set_input("{}")
        metadata = evaluator.query(bundle, meta_ep)
        targets = metadata.get("targets") if isinstance(metadata, dict) else None
        for kind in targets if isinstance(targets, list) else []:
            evaluator.set_input(json.dumps({"request": {
                "uid": "smoke", "kind": {"kind": kind}, "namespace": "default",
                "operation": "CREATE", "object": {"kind": kind, "metadata": {"name": "smoke"}}}}))
            evaluator.query(bundle, deny_ep)
    except RegoQueryError as exc:
        return f"evaluating the policy failed: {exc}"
    return metadata


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
