"""``magtape check -j N``: the input cut into N shards, each parsed and checked by one process.

Why processes: parsing the YAML, building each AdmissionReview, reading the
engine's answer and applying the webhook's decision run in the command's
interpreter, under one lock, and cost more CPU than the policy evaluation in
the engine's worker (3,000 Deployments with ``-j 1``: 0.9 s of CPU in the
command's process, 0.3 s of it parsing, and 0.4 s in the engine's).
Threads would spread only the engine's share.

Why each process parses its own shard: parsing everything here and handing
the objects to a pool as they are read needs no cutting, but ``-j 2`` then
took 0.68-0.73 of ``-j 1``, this design 0.61-0.63 (docs/performance.md): the
parse stays on one core, and every object crosses a process boundary twice
(out, and back as a result), which two busy cores pay for in full. Here
this process is shard 0 and a :class:`~concurrent.futures.ProcessPoolExecutor`
runs the others, one task each; only results travel, without their objects
but for what the reports show (3,000 results holding whole objects took
0.3-0.4 s of CPU to pickle and unpickle, 0.1 s without).

The one exchange: every Namespace object in the input becomes
``data.kubernetes.namespaces`` for every object, as with ``-j 1``, so a shard
reports what it read (:class:`Parsed`) and waits for the input's Namespaces
before evaluating. A shard that cannot parse its slice makes the run read
the input serially (:class:`Reparse`), so a broken document is reported as
``-j 1`` reports it; an error evaluating travels as the exception and is
raised here, shard 0's first. Each shard renders its objects' parts of the
report (``magtape.report.parts``); this process joins them in input order.

Cutting a file: a line that starts with ``---`` followed by a blank starts a
YAML document (the scanner treats it so wherever it appears), so a file can
be cut before any such line; each slice knows its first line and document
number, so locations are the file's. A slice whose document count differs
from the expected one makes the run read serially. Files with ``%``
directives or line breaks other than ``\n`` and ``\r\n`` are never cut.

The pool is forked when this process has one thread (nothing to copy but
memory), spawned otherwise. Ctrl-C or an error stops the shards at their next
document or object (they ignore SIGINT) and waits for them: no process is
left behind. A shard process that dies is an error saying to rerun with ``-j 1``.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import queue
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from multiprocessing.util import Finalize
from typing import Any

from magtape.check import CheckOptions, PolicySources, _Engine, evaluate
from magtape.check.manifests import Input, InputError, Manifest, parse_document_text
from magtape.check.model import CheckRun
from magtape.engine import EngineError
from magtape.kube.objects import metadata
from magtape.report import parts as render_parts
from magtape.settings import Settings

# Below this many documents per shard a shard's own start-up (a process, an
# engine worker compiling the policies) costs more than it saves.
MIN_DOCUMENTS_PER_SHARD = 64

_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|\Z)", re.MULTILINE)
_COMMENT_OR_BLANK = re.compile(r"[ \t]*(#.*)?")


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


def parse_slices(slices: Sequence[Slice],
                 each_document: Callable[[], None] | None = None) -> Input:
    """The slices' objects, located in their files; :class:`Reparse` on any problem."""
    found = Input()
    for s in slices:
        try:
            n = parse_document_text(found, s.name, s.text, s.line_offset, s.index_offset,
                                    each_document)
        except InputError as exc:
            raise Reparse(str(exc)) from None
        if s.documents is not None and n != s.documents:
            raise Reparse(f"{s.name}: {n} documents where the split expected {s.documents}")
    return found


@dataclass(frozen=True)
class Parsed:
    """What a shard read, or (:meth:`merged`) every shard, before anything is evaluated."""

    objects: int
    skipped: Counter[str]
    namespaces: dict[str, Any]  # the Namespace objects by name

    @classmethod
    def of(cls, found: Input) -> Parsed:
        return cls(len(found.manifests), found.skipped,
                   {m.name: m.obj for m in found.manifests if m.kind == "Namespace"})

    @classmethod
    def merged(cls, shards: Sequence[Parsed], skipped: Counter[str]) -> Parsed:
        """In shard order: a later Namespace of a name wins, as with -j 1."""
        namespaces: dict[str, Any] = {}
        for p in shards:
            skipped.update(p.skipped)
            namespaces.update(p.namespaces)
        return cls(sum(p.objects for p in shards), skipped, namespaces)


@dataclass(frozen=True)
class _Exchange:
    """What this process and the shard processes share."""

    parsed: Queue[tuple[int, Parsed | Reparse]]  # shard -> here: what it read
    namespaces: Queue[dict[str, Any] | None]  # here -> shards: evaluate with these; None: stop
    checked: Any  # multiprocessing Array: objects each shard has checked (progress)
    stop: Event  # set: shards stop at the next document or object

    def release(self, shards: int) -> None:
        """Stop every shard: those waiting for the Namespaces and those at work."""
        self.stop.set()
        for _ in range(shards):
            self.namespaces.put(None)


class _Stopped(Exception):
    """A shard asked to stop."""


def run_sharded(settings: Settings, options: CheckOptions, policy: PolicySources,
                shards: Sequence[Sequence[Slice]], skipped: Counter[str],
                on_parsed: Callable[[Parsed], Callable[[int], None] | None]) -> CheckRun:
    """Check ``shards[0]`` here and each other shard in a pool process, then merge.

    ``on_parsed`` is called once every shard has parsed (it may raise, to stop
    the run) and returns the progress callback. :class:`Reparse` when a shard
    could not parse its slices.
    """
    ctx = _context()
    exchange = _Exchange(ctx.Queue(), ctx.Queue(), ctx.Array("q", len(shards), lock=False),
                         ctx.Event())
    one = replace(options, jobs=1)
    with ProcessPoolExecutor(len(shards) - 1, mp_context=ctx, initializer=_start,
                             initargs=(settings, policy, exchange)) as pool:
        # Forked here, before this process's engine starts its threads. Frozen: a
        # child's collector does not walk (and so copy, page by page) what it inherits.
        gc.freeze()
        try:
            others = [pool.submit(_shard, one, shards[k], k) for k in range(1, len(shards))]
        finally:
            gc.unfreeze()
        try:
            return _check_here(settings, one, policy, shards[0], skipped, on_parsed, exchange,
                               others)
        except BaseException as exc:
            exchange.release(len(others))  # leaving the pool waits for them
            if isinstance(exc, BrokenProcessPool):
                raise EngineError("crash", "a check process ended without an answer; "
                                  "run with -j 1 to see why") from None
            raise


def _check_here(settings: Settings, options: CheckOptions, policy: PolicySources,
                own_slices: Sequence[Slice], skipped: Counter[str],
                on_parsed: Callable[[Parsed], Callable[[int], None] | None],
                exchange: _Exchange, others: Sequence[Future[CheckRun | None]]) -> CheckRun:
    """Shard 0, and the merge."""
    with _Engine(settings, 1, policy) as engine:
        own = parse_slices(own_slices)
        read = [Parsed.of(own), *_reports(exchange, others)]
        everything = Parsed.merged(read, skipped)
        progress = on_parsed(everything)
        for _ in others:
            exchange.namespaces.put(everything.namespaces)

        def report(done: int) -> None:
            if progress is not None:
                progress(done + sum(exchange.checked[1:]))

        run = evaluate(settings, own, options, report, engine, namespaces=everything.namespaces)
    rendered = render_parts(options.output, run)
    objects, parts = list(run.objects), list(rendered or ())
    # Thousands of new objects and no cycle among them: without the collector,
    # which would walk the whole heap again and again.
    gc.disable()
    try:
        for future in others:
            while not wait([future], timeout=0.1).done:
                report(len(run.objects))
            theirs = future.result()
            assert theirs is not None
            objects.extend(theirs.objects)
            parts.extend(theirs.parts.get(options.output, ()))
    finally:
        gc.enable()
    if progress is not None:
        progress(len(objects))  # the last line, whichever shard finished last
    return replace(run, objects=tuple(objects), skipped_documents=dict(everything.skipped),
                   parts={options.output: tuple(parts)} if rendered is not None else {})


def _reports(exchange: _Exchange, others: Sequence[Future[CheckRun | None]]) -> list[Parsed]:
    """What every other shard read, in shard order; a shard's error raised here."""
    read: dict[int, Parsed] = {}
    while len(read) < len(others):
        try:
            k, parsed = exchange.parsed.get(timeout=0.1)
        except queue.Empty:
            for future in others:  # a shard that ended before reporting: its error
                if future.done():
                    future.result()
            continue
        if isinstance(parsed, Reparse):
            raise parsed
        read[k] = parsed
    return [read[k] for k in sorted(read)]


def _context() -> ForkContext | SpawnContext:
    """fork when it is safe (one thread: no lock can be held); spawn otherwise."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


# ------------------------------------------------------ in a pool process
@dataclass(frozen=True)
class _ShardProcess:
    """What a pool process keeps between its initializer and its task (not a
    background.Worker: that name is the threads')."""

    settings: Settings
    engine: _Engine
    exchange: _Exchange


_this_process: _ShardProcess | None = None


def _start(settings: Settings, policy: PolicySources, exchange: _Exchange) -> None:
    """The pool process' initializer: its engine, closed when the process exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command to handle
    global _this_process
    engine = _Engine(settings, 1, policy)
    _this_process = _ShardProcess(settings, engine, exchange)
    Finalize(None, engine.close, exitpriority=0)  # a pool process skips atexit


def _shard(options: CheckOptions, slices: Sequence[Slice], k: int) -> CheckRun | None:
    """Shard ``k``: parse, report, wait for the Namespaces, evaluate; None when stopped."""
    assert _this_process is not None
    exchange = _this_process.exchange

    def stopping(*_: object) -> None:
        if exchange.stop.is_set():
            raise _Stopped

    def progress(done: int) -> None:
        exchange.checked[k] = done
        stopping()

    try:
        found = parse_slices(slices, stopping)
    except Reparse as exc:
        exchange.parsed.put((k, exc))
        return None
    except _Stopped:
        return None
    exchange.parsed.put((k, Parsed.of(found)))
    namespaces = exchange.namespaces.get()
    if namespaces is None:
        return None
    try:
        run = evaluate(_this_process.settings, found, options, progress, _this_process.engine,
                       namespaces=namespaces)
    except _Stopped:
        return None
    rendered = render_parts(options.output, run)
    return replace(run, objects=tuple(replace(o, manifest=_identified(o.manifest))
                                      for o in run.objects),
                   parts={} if rendered is None else {options.output: rendered})


def _identified(m: Manifest) -> Manifest:
    """The manifest with only what the reports show of its object (kind and names)."""
    meta = metadata(m.obj)
    obj: dict[str, Any] = {key: m.obj[key] for key in ("apiVersion", "kind") if key in m.obj}
    obj["metadata"] = {key: meta[key] for key in ("name", "generateName", "namespace")
                       if key in meta}
    return replace(m, obj=obj)
