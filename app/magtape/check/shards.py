"""``magtape check -j N``: the input split into N contiguous shards, one process each.

Why processes and not threads: with threads, parsing the YAML, building each
AdmissionReview, reading the engine's answer and applying the webhook's
decision all run in one interpreter under one lock, more CPU than the policy
evaluation itself (3,000 Deployments with ``-j 1``: 1.2 s of CPU in the
command's process, 0.8 s in the engine's); two cores could not halve it. Here
each shard process parses its part of the input, drives its own engine
worker and decides its objects, exactly as ``-j 1`` does on the whole input;
the parent is shard 0 itself and then merges the others' compact answers.
Forked when this process has one thread (nothing to copy but memory),
spawned otherwise.

The protocol, over one pipe per child: the child parses and sends
``("parsed", namespaces, objects, skipped)``; the parent, once every shard
has parsed, sends back every Namespace object in the input (they become
``data.kubernetes.namespaces`` for all shards, as with ``-j 1``) and the
child evaluates and sends ``("done", results)``. A child that cannot parse
its part sends ``("reparse", why)``: the parent then reads the input
serially, so a broken document is reported exactly as ``-j 1`` reports it.

Cutting a file: a line that starts with ``---`` followed by a blank starts
a YAML document (the scanner treats it so wherever it appears), so a file
can be cut before any such line; a shard gets one slice per file it has
documents of, and each slice knows its first line and document number, so
locations are the file's. A slice whose document count differs from the
expected one (an odd stream) makes the run fall back to the serial reader.
Files with ``%`` directives or line breaks other than ``\n`` and ``\r\n``
are never cut.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import re
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from magtape.check import (
    CheckOptions,
    NothingChecked,
    PolicySources,
    _Engine,
    evaluate,
)
from magtape.check.manifests import Input, InputError, Manifest, parse_document_text
from magtape.check.model import CheckFinding, CheckRun, ObjectResult, ObjectVerdict
from magtape.check.offline import OfflineInputError
from magtape.engine import EngineError
from magtape.engine.sources import SourceError
from magtape.kube.objects import metadata
from magtape.policy import PolicyInfo, Severity, Violation
from magtape.remediation import Catalogue, RemediationError
from magtape.report import parts as render_parts
from magtape.settings import Settings

# Below this many documents per shard a shard's own start-up (a process, an
# engine worker compiling the policies) costs more than it saves.
MIN_DOCUMENTS_PER_SHARD = 64

_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|\Z)", re.MULTILINE)
_COMMENT_OR_BLANK = re.compile(r"[ \t]*(#.*)?")

# Exceptions a shard reports by class, re-raised in the parent with the same
# message: run_check prints each as -j 1 would.
_REPORTED: dict[str, type[Exception]] = {
    "InputError": InputError, "SourceError": SourceError, "RemediationError": RemediationError,
    "NothingChecked": NothingChecked, "OfflineInputError": OfflineInputError,
}


class Reparse(Exception):
    """A shard could not parse its slice: read the input serially instead."""


@dataclass(frozen=True)
class Slice:
    """A run of whole documents of one file, and where it sits in that file."""

    name: str
    text: str
    line_offset: int  # lines of the file before the slice
    index_offset: int  # documents of the file before the slice
    documents: int | None  # the documents it must hold; None: a whole file, not checked


@dataclass(frozen=True)
class _Unit:
    """One document of a file that can be cut (or a whole file that cannot)."""

    source: int  # position of the file in the input
    start: int
    end: int
    documents: int | None
    before: int  # documents of the file before this one


def _units(source: int, text: str) -> list[_Unit]:
    """``text`` cut before each document start line (see the module docstring)."""
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts or not _cuttable(text):
        return [_Unit(source, 0, len(text), None, 0)]
    # Before the first "---": one implicit document when anything but comments,
    # blank lines and a byte order mark is there; else it goes with the first.
    preamble = int(any(not _COMMENT_OR_BLANK.fullmatch(ln)
                       for ln in text[:starts[0]].lstrip("\ufeff").splitlines()))
    units = [_Unit(source, 0, starts[0], 1, 0)] if preamble else []
    bounds = [starts[0] if preamble else 0, *starts[1:], len(text)]
    units.extend(_Unit(source, a, b, 1, preamble + i)
                 for i, (a, b) in enumerate(itertools.pairwise(bounds)))
    return units


def _cuttable(text: str) -> bool:
    """No directive (it belongs to the next document) and only \n or \r\n line
    breaks (others would make the line count differ from the parser's)."""
    if text.startswith("%") or "\n%" in text:
        return False
    if any(c in text for c in ("\x85", "\u2028", "\u2029")):
        return False
    return "\r" not in text or text.count("\r") == text.count("\r\n")


def plan(sources: Sequence[tuple[str, str]], jobs: int) -> list[list[Slice]]:
    """The input as at most ``jobs`` contiguous shards of similar size, in input order.

    One shard (the whole input, uncut) when there are fewer than
    :data:`MIN_DOCUMENTS_PER_SHARD` documents per shard.
    """
    units = [u for i, (_, text) in enumerate(sources) for u in _units(i, text)]
    shards = max(1, min(jobs, len(units) // MIN_DOCUMENTS_PER_SHARD))
    if shards == 1:
        return [[Slice(name, text, 0, 0, None) for name, text in sources]]
    total = sum(u.end - u.start for u in units) or 1
    runs: list[list[list[_Unit]]] = [[] for _ in range(shards)]
    done = 0
    for u in units:
        # The shard this document's middle falls in, by bytes.
        k = min(shards - 1, (done + (u.end - u.start) // 2) * shards // total)
        done += u.end - u.start
        if runs[k] and runs[k][-1][-1].source == u.source:
            runs[k][-1].append(u)
        else:
            runs[k].append([u])
    return [[_slice(sources, run) for run in shard] for shard in runs if shard]


def _slice(sources: Sequence[tuple[str, str]], run: list[_Unit]) -> Slice:
    """Consecutive documents of one file as one slice."""
    name, text = sources[run[0].source]
    first, last = run[0], run[-1]
    documents = None if first.documents is None else sum(u.documents or 0 for u in run)
    return Slice(name, text[first.start:last.end], text.count("\n", 0, first.start),
                 first.before, documents)


def parse_slices(slices: Sequence[Slice]) -> Input:
    """The slices' objects, located in their files; :class:`Reparse` on any problem."""
    found = Input()
    for s in slices:
        try:
            n = parse_document_text(found, s.name, s.text, s.line_offset, s.index_offset)
        except InputError as exc:
            raise Reparse(str(exc)) from None
        if s.documents is not None and n != s.documents:
            raise Reparse(f"{s.name}: {n} documents where the split expected {s.documents}")
    return found


def _namespaces(found: Input) -> dict[str, Any]:
    return {m.name: m.obj for m in found.manifests if m.kind == "Namespace"}


# --------------------------------------------------------------- the parent
@dataclass(frozen=True)
class Parsed:
    """What every shard read, before anything is evaluated."""

    objects: int
    skipped: Counter[str]


def run_sharded(settings: Settings, options: CheckOptions, policy: PolicySources,
                shards: Sequence[Sequence[Slice]], skipped: Counter[str],
                on_parsed: Callable[[Parsed], Callable[[int], None] | None]) -> CheckRun:
    """Check ``shards[0]`` here and each other shard in a child process, then merge.

    ``on_parsed`` is called once every shard has parsed (it may raise, to stop
    the run) and returns the progress callback. :class:`Reparse` when a shard
    could not parse its slices.
    """
    ctx = _context()
    progress_counts = ctx.Array("q", len(shards), lock=False)
    children: list[tuple[BaseProcess, Connection]] = []
    finished = False
    try:
        # A forked child's collector must not visit (and so copy, page by page)
        # every object it inherited from this process.
        gc.freeze()
        try:
            for k in range(1, len(shards)):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=shard_main, name=f"magtape-check-{k}", daemon=True,
                                   args=(theirs, settings, options, policy, shards[k],
                                         progress_counts, k))
                proc.start()
                theirs.close()
                children.append((proc, mine))
        finally:
            gc.unfreeze()
        with _Engine(settings, 1, policy) as engine:
            own = parse_slices(shards[0])
            total, namespaces = len(own.manifests), _namespaces(own)
            skipped.update(own.skipped)
            for child, conn in children:
                reply = _receive(child, conn)
                if reply[0] == "reparse":
                    raise Reparse(reply[1])
                _, their_namespaces, objects, their_skipped = reply
                namespaces.update(their_namespaces)  # later wins, as with -j 1
                total += objects
                skipped.update(their_skipped)
            progress = on_parsed(Parsed(total, skipped))
            for _, conn in children:
                conn.send(("go", namespaces))
            report = _combined(progress, progress_counts)
            run = evaluate(settings, own, replace(options, jobs=1), report, engine,
                           namespaces=namespaces)
        by_name = {p.name: p for p in run.policies}
        results = list(run.objects)
        parts = render_parts(options.output, run)
        for child, conn in children:
            reply = _receive(child, conn, lambda: report(len(run.objects)))
            # Thousands of new objects and no cycle among them: without the
            # collector, which would walk the whole heap again and again.
            gc.disable()
            try:
                results.extend(_unpack(r, run.catalogue, by_name) for r in reply[1])
            finally:
                gc.enable()
            if parts is not None:
                parts = (*parts, *reply[2])
        rendered = {} if parts is None else {options.output: parts}
        if progress is not None:
            progress(len(results))  # the last line, whichever shard finished last
        finished = True
        return replace(run, objects=tuple(results), skipped_documents=dict(skipped),
                       parts=rendered)
    finally:
        for child, conn in children:
            conn.close()
            if finished:  # each has answered and is closing its engine
                child.join(timeout=5)
            if child.is_alive():  # interrupted, failed, or stuck: no reason to wait
                child.kill()
            child.join()


def _context() -> ForkContext | SpawnContext:
    """fork when it is safe (one thread: no lock can be held); spawn otherwise."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _combined(progress: Callable[[int], None] | None,
              counts: Any) -> Callable[[int], None]:
    """Progress of this process's shard plus the children's counts."""
    def report(done: int) -> None:
        if progress is not None:
            progress(done + sum(counts[1:]))
    return report


def _receive(proc: BaseProcess, conn: Connection,
             tick: Callable[[], None] | None = None) -> tuple[Any, ...]:
    """The child's next message; its errors re-raised here, as -j 1 would raise them."""
    while tick is not None and not wait([conn], timeout=0.1):
        tick()
    try:
        reply: tuple[Any, ...] = conn.recv()
    except EOFError:
        proc.join(timeout=5)
        raise EngineError("crash", f"check process {proc.name} exited (code {proc.exitcode}) "
                          "without an answer; run with -j 1 to see why") from None
    if reply[0] == "error":
        _, cls, args = reply
        if cls == "EngineError":
            raise EngineError(*args)
        raise _REPORTED[cls](*args)
    if reply[0] == "crash":
        raise RuntimeError(f"check process {proc.name} failed:\n{reply[1]}")
    return reply


# ---------------------------------------------------------------- the child
def shard_main(conn: Connection, settings: Settings, options: CheckOptions,
               policy: PolicySources, slices: Sequence[Slice], progress_counts: Any,
               k: int) -> None:
    """A child process: parse, wait for the namespaces, evaluate, answer compactly."""
    try:
        with _Engine(settings, 1, policy) as engine:
            try:
                found = parse_slices(slices)
            except Reparse as exc:
                conn.send(("reparse", str(exc)))
                return
            conn.send(("parsed", _namespaces(found), len(found.manifests), found.skipped))
            message = conn.recv()

            def progress(done: int) -> None:
                progress_counts[k] = done

            run = evaluate(settings, found, replace(options, jobs=1), progress, engine,
                           namespaces=message[1])
            # Before the engine closes: the parent need not wait for that. The
            # objects' parts of the report are rendered here, beside the other parts.
            conn.send(("done", [_pack(o) for o in run.objects],
                       render_parts(options.output, run)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # Ctrl-C, or the parent stopped: it reports
    except EngineError as exc:
        conn.send(("error", "EngineError", (exc.reason, exc.detail)))
    except tuple(_REPORTED.values()) as exc:
        conn.send(("error", type(exc).__name__, (str(exc),)))
    except Exception:  # a defect: the parent shows the traceback
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


# Results travel as tuples of plain values, with only the object's identity:
# as dataclasses holding whole objects, 3,000 results took about 0.4 s to
# pickle and unpickle; as tuples about 0.1 s, rebuilding them included.
def _pack(o: ObjectResult) -> tuple[Any, ...]:
    m = o.manifest
    return (m.path, m.index, m.line, _identity(m.obj), m.item, o.namespace, o.verdict.value,
            tuple((f.violation.msg, f.violation.policy, f.violation.severity.value,
                   f.violation.errcode, f.violation.details, f.denies, f.exemption)
                  for f in o.findings),
            o.errors, o.failed_policies, tuple(p.name for p in o.checks))


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object the reports show (its kind and names), not its spec."""
    meta = metadata(obj)
    out = {key: obj[key] for key in ("apiVersion", "kind") if key in obj}
    out["metadata"] = {key: meta[key] for key in ("name", "generateName", "namespace")
                       if key in meta}
    return out


def _unpack(r: tuple[Any, ...], catalogue: Catalogue,
            by_name: Mapping[str, PolicyInfo]) -> ObjectResult:
    path, index, line, obj, item, namespace, verdict, findings, errors, failed, checks = r
    manifest = Manifest(path, index, line, obj, item)
    out = []
    for msg, policy, severity, errcode, details, denies, exemption in findings:
        violation = Violation(msg, policy, Severity(severity), errcode, details)
        out.append(CheckFinding(violation, denies, catalogue.for_violation(violation), exemption))
    return ObjectResult(manifest, namespace, ObjectVerdict(verdict),
                        tuple(by_name[name] for name in checks), tuple(out), errors, failed)

