"""Vets a new policy set in a child process, one policy at a time, with deadlines.

A policy ConfigMap is not trusted code: each policy is compiled with the
libraries, its ``policy_metadata`` read and its ``deny`` run once on a
minimal object of every kind it targets, in a worker process (see
:mod:`magtape.engine.worker`) with the engine's memory cap and a deadline per
policy. A policy that fails to compile, fails on that object, crashes the
child, exhausts its memory or misses the deadline is reported and left out;
the child is replaced and the others are vetted on. The last step runs the
surviving set together, which catches conflicts between ConfigMaps.

Verdicts are cached by content (a policy together with the libraries it was
compiled with; the assembled set), so a reload that changes one ConfigMap vets
only that one, a slow policy costs its deadline once, not on every reload, and
reloading an unchanged set starts no child at all.

The built-in policies are vetted when the package is built: their verdicts
(by the digest of their text, with the built-in libraries) are recorded in
``builtin_vetted.json`` by ``hack/vet_builtins.py``, which ``make
check-generated`` keeps current. A set made only of built-in modules, from
files or from the ConfigMaps rendered from them, starts no vetting child; it
was vetted with the same engine release (the record names it, and is ignored
under any other). Any other module is vetted here as above.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magtape.engine.child import Child, ChildDied, Op
from magtape.engine.policyset import POLICY_PREFIX, Grouped, PolicyGroup
from magtape.engine.sources import source_digest
from magtape.engine.worker import smoke_input
from magtape.policy import PolicyLoadError, PolicyModule

log = logging.getLogger(__name__)

WORKER_MODULE = "magtape.engine.worker"
START_TIMEOUT_SECONDS = 30.0  # a child's first answer includes starting Python
BUILTIN_VETTED = Path(__file__).with_name("builtin_vetted.json")
ENGINE_DISTRIBUTION, ENGINE_MODULE = "gordon-to-regorus", "regorus"


@dataclass(frozen=True)
class Vetted:
    """A policy that compiled and ran: its group and raw metadata."""

    group: PolicyGroup
    metadata: Any


@dataclass(frozen=True)
class VetResult:
    libraries: tuple[PolicyModule, ...]  # library modules that compile
    policies: tuple[Vetted, ...]
    errors: tuple[PolicyLoadError, ...]
    # Every module was a built-in one, vetted when the package was built: the
    # set needs no run together either (built-in packages cannot conflict).
    prevetted: bool = False


@dataclass(frozen=True)
class BuiltinVerdicts:
    """What ``builtin_vetted.json`` records: the built-in libraries' digests, and
    each built-in policy's metadata by the sorted digests of its modules."""

    engine: str
    libraries: frozenset[str]
    policies: Mapping[tuple[str, ...], Any]

    def to_json(self) -> str:
        return json.dumps({
            "engine": self.engine, "libraries": sorted(self.libraries),
            "policies": [{"modules": list(k), "metadata": v}
                         for k, v in sorted(self.policies.items())]}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BuiltinVerdicts:
        doc = json.loads(text)
        return cls(doc["engine"], frozenset(doc["libraries"]),
                   {tuple(p["modules"]): p["metadata"] for p in doc["policies"]})


def engine_release() -> str | None:
    """The installed engine's distribution and version, from its ``.dist-info``
    beside the module (what importlib.metadata reads, without its slow import)."""
    spec = importlib.util.find_spec(ENGINE_MODULE)
    if spec is None or not spec.origin:
        return None
    prefix = ENGINE_DISTRIBUTION.replace("-", "_") + "-"
    origin = Path(spec.origin)  # .../site-packages/regorus/__init__.py, or a module file
    site = origin.parent.parent if spec.submodule_search_locations else origin.parent
    found = [p.name[len(prefix):-len(".dist-info")]
             for p in site.glob(f"{prefix}*.dist-info")]
    return f"{ENGINE_DISTRIBUTION} {found[0]}" if len(found) == 1 else None


@functools.cache
def builtin_verdicts() -> BuiltinVerdicts | None:
    """The recorded verdicts, or None when they are missing or were recorded with
    another engine release (then every module is vetted in a child)."""
    try:
        recorded = BuiltinVerdicts.from_json(BUILTIN_VETTED.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s is missing or unreadable: the built-in policies are vetted at "
                    "every load", BUILTIN_VETTED)
        return None
    release = engine_release()
    return recorded if release is not None and recorded.engine == release else None


def _digests(modules: Sequence[PolicyModule]) -> tuple[str, ...]:
    return tuple(sorted(source_digest(m.source) for m in modules))


_Verdict = dict[str, Any]  # the worker's answer to a "V" frame


class _Cache:
    """A small LRU of verdicts by content digest, shared by every Vetter."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_policies = _Cache(512)  # verdict per (libraries, policy)
_libraries = _Cache(16)  # errors per library set
_sets = _Cache(16)  # outcome per assembled set (None: fine)


def module_pairs(modules: Iterable[PolicyModule]) -> list[list[str]]:
    return [[m.filename, m.source] for m in modules]


class Vetter:
    """Vets policy sets in one child at a time (started on first need, replaced
    after a failure); ``close`` kills it, also from another thread."""

    def __init__(self, timeout: float, memory_mb: int, trust_builtins: bool = True) -> None:
        self._timeout = timeout
        self._memory_mb = memory_mb
        # False: vet the built-ins too (hack/vet_builtins.py records them so).
        self._builtins = builtin_verdicts() if trust_builtins else None
        self._child: Child | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _call(self, op: bytes, payload: bytes) -> tuple[bytes, bytes]:
        with self._lock:
            if self._closed:
                raise ChildDied("crash", "the engine is shutting down")
            child, fresh = self._child, self._child is None
            if child is None:
                child = self._child = Child(WORKER_MODULE, self._memory_mb)
        try:
            if fresh:
                # Starting Python gets its own allowance (a frame the worker
                # refuses at once), so the policy's deadline is its own.
                child.call(b"?", b"", START_TIMEOUT_SECONDS)
            frame = child.call(op, payload, self._timeout)
        except ChildDied:
            with self._lock:
                self._child = None
            raise
        return frame.op, frame.payload

    def close(self) -> None:
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.kill()

    # ---------------------------------------------------------------- steps
    def vet(self, grouped: Grouped) -> VetResult:
        """Vet every library and policy of ``grouped``; never raises for a bad policy."""
        errors = [PolicyLoadError(m.origin, m.filename, "no `package` clause found")
                  for m in grouped.unparsable]
        # Left out, these take nothing from a built-in set: it stays prevetted.
        left_out = [PolicyLoadError(
            i.module.origin, i.module.filename,
            f"package {i.package} belongs to {i.owner}: left out, as it would rewrite that "
            "package (and every policy using it); give this module a package of its own",
            policy=i.package if i.package.startswith(POLICY_PREFIX) else None)
            for i in grouped.intruders]
        libraries = list(grouped.libraries)
        lib_pairs = module_pairs(libraries)
        lib_key = _digest(lib_pairs)
        builtins = self._builtins
        lib_digests = _digests(libraries)
        if builtins is not None and (len(set(lib_digests)) != len(lib_digests)
                                     or set(lib_digests) != builtins.libraries):
            builtins = None  # the recorded verdicts hold with the built-in libraries only
        bad: dict[str, dict[str, Any]] | None = {} if builtins else _libraries.get(lib_key)
        if bad is None:
            try:
                _, payload = self._call(Op.VET_LIBRARIES, _json({"modules": lib_pairs}))
                bad = {e["filename"]: e for e in json.loads(payload)}
            except ChildDied as exc:
                bad = {m.filename: {"message": _died_message(exc, self._timeout), "line": None}
                       for m in libraries}
            _libraries.put(lib_key, bad)
        errors += [PolicyLoadError(m.origin, m.filename, bad[m.filename]["message"],
                                   bad[m.filename]["line"])
                   for m in libraries if m.filename in bad]
        libraries = [m for m in libraries if m.filename not in bad]
        lib_pairs = module_pairs(libraries)
        vetted: list[Vetted] = []
        prevetted = builtins is not None and not errors
        for group in grouped.policies:
            recorded = builtins.policies.get(_digests(group.modules)) if builtins else None
            prevetted = prevetted and recorded is not None
            verdict = ({"ok": True, "metadata": recorded} if recorded is not None
                       else self._verdict(group, lib_pairs, lib_key))
            if verdict["ok"]:
                vetted.append(Vetted(group, verdict["metadata"]))
            else:
                origins = {m.filename: m.origin for m in group.modules}
                filename = verdict.get("filename") or group.modules[0].filename
                errors.append(PolicyLoadError(origins.get(filename, group.origin), filename,
                                              verdict["error"], verdict.get("line"),
                                              policy=group.package))
        return VetResult(tuple(libraries), tuple(vetted), (*left_out, *errors), prevetted)

    def _verdict(self, group: PolicyGroup, lib_pairs: list[list[str]],
                 lib_key: str) -> _Verdict:
        pairs = module_pairs(group.modules)
        key = _digest([[lib_key, group.package], *pairs])
        cached: _Verdict | None = _policies.get(key)
        if cached is not None:
            return cached
        try:
            op, payload = self._call(Op.VET_POLICY, _json({"package": group.package,
                                                  "libraries": lib_pairs, "modules": pairs}))
            verdict: _Verdict = (json.loads(payload) if op == Op.OK
                                 else {"ok": False, "error": payload.decode(errors="replace")})
        except ChildDied as exc:
            verdict = {"ok": False, "error": _died_message(exc, self._timeout)}
        _policies.put(key, verdict)
        return verdict

    def check_set(self, modules: list[list[str]], plan: dict[str, Any],
                  program: list[int]) -> str | None:
        """Run the assembled set once per kind; what went wrong, or None.

        Each policy ran on its own during vetting; together they can still
        conflict (two ConfigMaps defining the same rule differently).
        """
        key = _digest([*modules, [json.dumps([plan, program], sort_keys=True)]])
        cached: list[str | None] | None = _sets.get(key)
        if cached is not None:
            return cached[0]
        problem = self._check_set(modules, plan, program)
        _sets.put(key, [problem])
        return problem

    def _check_set(self, modules: list[list[str]], plan: dict[str, Any],
                   program: list[int]) -> str | None:
        try:
            child_op, payload = self._call(Op.LOAD, _json({"modules": modules, "plan": plan,
                                                        "program": program, "version": 0}))
            if child_op != Op.OK:
                return payload.decode(errors="replace")
            if payload:  # the set loads, but regorus could not compile its built-ins
                log.warning("%s", payload.decode(errors="replace"))
            for kind in plan:
                child_op, payload = self._call(Op.EVALUATE, kind.encode() + b"\n"
                                               + smoke_input(kind).encode())
                if child_op == Op.ERROR:
                    return payload.decode(errors="replace")
                if child_op == Op.FINDINGS:
                    errors = json.loads(payload.partition(b"\n")[2])["errors"]
                    if errors:
                        return "; ".join(f"policy {k!r}: {v}" for k, v in sorted(errors.items()))
            return None
        except ChildDied as exc:
            return _died_message(exc, self._timeout)


def _died_message(exc: ChildDied, timeout: float) -> str:
    if exc.failure == "timeout":
        return (f"vetting did not finish within {timeout:g}s: the policy is too slow to "
                "run on every admission request; simplify it")
    if exc.failure == "memory":
        return "vetting exceeded the engine's memory cap (MAGTAPE_ENGINE_MEMORY_MB)"
    return f"the engine crashed while vetting this policy ({exc.detail})"


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _digest(pairs: list[list[str]]) -> str:
    h = hashlib.sha256()
    for pair in pairs:
        for part in pair:
            h.update(part.encode())
            h.update(b"\0")
    return h.hexdigest()
