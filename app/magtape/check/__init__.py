"""``magtape check``: the webhook's checks, offline, for CI pipelines.

Reads manifests (see :mod:`magtape.check.manifests`), wraps each object in the
AdmissionReview the API server would send, and evaluates it with the same
engine and deny-level rule as the webhook. Namespace objects in the input
become ``data.kubernetes.namespaces``, so checks that read namespace
annotations (MT2002) work offline too.

Exit codes: 0 nothing failed at the deny level, 1 something did, 2 the input
or the policies could not be read, nothing at all was checked (unless
``allow_empty``), or a policy failed at runtime; 130 interrupted.
Objects of kinds no policy targets are reported ``SKIP``; documents that are
not Kubernetes objects are counted and left out with a note on stderr.
``-j N`` checks the input in N processes (:mod:`magtape.check.shards`); the
report is byte for byte the one ``-j 1`` prints.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

from magtape.check import offline
from magtape.check.manifests import (
    Input,
    InputError,
    Manifest,
    parse_document_text,
    read_manifests,
    read_sources,
)
from magtape.check.model import CheckFinding, CheckRun, ObjectResult, ObjectVerdict
from magtape.check.offline import ObjectKey
from magtape.decision import Verdict as DecisionVerdict
from magtape.enforcement import Enforcer
from magtape.enforcement.inheritance import Inheritance, OwnersFrom
from magtape.enforcement.overrides import EnforcementConfig
from magtape.engine import EngineError
from magtape.engine.sources import SourceError, base_data, deep_merge, policy_modules
from magtape.policy import Evaluation, LoadReport, PolicyInfo, PolicyModule
from magtape.remediation import Catalogue, RemediationError, remedies_for
from magtape.settings import Settings

EXIT_OK, EXIT_DENIED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# The offline run has no admission deadline; a slow CI runner must not turn a
# big object into a timeout.
MIN_TIMEOUT_SECONDS = 30.0
MAX_JOBS = 64

@dataclass(frozen=True)
class CheckOptions:
    """What the command line asks of one run (the flags live in magtape.cli)."""

    paths: tuple[str, ...] = ()  # empty: stdin
    namespace: str = ""
    output: str = "text"
    jobs: int = 1
    ignore: tuple[str, ...] = ()
    allow_empty: bool = False
    # The webhook's enforcement state from files (magtape.check.offline).
    exceptions: tuple[str, ...] = ()  # --exceptions FILE|DIR
    enforcement: str = ""  # --enforcement FILE (overrides)
    old: str = ""  # --old FILE: objects as they are now; matching inputs are UPDATEs
    # --as USER: who sends the requests; a controller identity lets an object with a
    # controller ownerReference to an --old object inherit its verdict, as in the webhook
    username: str = "magtape-check"


class NothingChecked(ValueError):
    """No object or no policy was read: a CI job that checks nothing must not pass."""


def run_check(settings: Settings, options: CheckOptions, out: TextIO, err: TextIO,
              stdin: TextIO | None = None) -> int:
    stdin = stdin if stdin is not None else sys.stdin
    if not options.paths and _isatty(stdin):
        print("magtape check: reading manifests from stdin (end with Ctrl-D); "
              "pass PATH to check files", file=err)
    try:
        run = (_run_parallel(settings, options, stdin, err) if options.jobs > 1
               else _run_serial(settings, options, stdin, err))
    except (InputError, SourceError, RemediationError, NothingChecked,
            offline.OfflineInputError) as exc:
        print(f"magtape check: {exc}", file=err)
        return EXIT_INPUT
    except EngineError as exc:
        print(f"magtape check: the policy engine failed: {exc}", file=err)
        return EXIT_INPUT
    from magtape.report import render

    out.write(render(options.output, run))
    if run.count(ObjectVerdict.ERROR):
        print(f"magtape check: {run.count(ObjectVerdict.ERROR)} objects could not be checked: "
              "a policy failed at runtime (see the report)", file=err)
        return EXIT_INPUT
    return EXIT_DENIED if run.count(ObjectVerdict.DENIED) else EXIT_OK


def _run_serial(settings: Settings, options: CheckOptions, stdin: TextIO, err: TextIO,
                read: tuple[Sequence[tuple[str, str]], Input] | None = None,
                policy: PolicySources | None = None) -> CheckRun:
    """One process: parse everything, then evaluate (``options.jobs`` threads).

    ``read``: the input files already read, and what their walk left out.
    """
    # The policies compile in the worker processes while the input is read.
    with _Engine(settings, options.jobs, policy) as engine:
        if read is None:
            found = read_manifests(options.paths or ("-",), stdin, options.ignore)
        else:
            sources, walked = read
            found = Input(skipped=Counter(walked.skipped))
            for name, text in sources:
                parse_document_text(found, name, text)
        _parsed(options, err, found.skipped, len(found.manifests))
        return evaluate(settings, found, options, _progress(err, len(found.manifests)), engine)


def _run_parallel(settings: Settings, options: CheckOptions, stdin: TextIO,
                  err: TextIO) -> CheckRun:
    """``-j N``: the input in N shards, each parsed and checked by its own process.

    Falls back to :func:`_run_serial` (threads) for an input too small to be
    worth it, and when a shard cannot parse its slice, so that the error is
    reported exactly as ``-j 1`` reports it.
    """
    from magtape.check import shards

    policy = PolicySources.read(settings)  # its errors come first, as with -j 1
    walked = Input()
    sources: list[tuple[str, str]] = []
    try:
        sources.extend(read_sources(options.paths or ("-",), stdin, options.ignore, walked))
    except InputError:
        for name, text in sources:  # a file before the unreadable one may be broken
            parse_document_text(Input(), name, text)
        raise
    plan = shards.plan(sources, options.jobs)
    if len(plan) > 1:
        def parsed(p: shards.Parsed) -> Callable[[int], None] | None:
            _parsed(options, err, p.skipped, p.objects)
            return _progress(err, p.objects)

        try:
            return shards.run_sharded(settings, options, policy, plan,
                                      Counter(walked.skipped), parsed)
        except shards.Reparse:
            pass  # the serial reader names the problem as -j 1 does
    return _run_serial(settings, options, stdin, err, (sources, walked), policy)


def _parsed(options: CheckOptions, err: TextIO, skipped: Mapping[str, int],
            objects: int) -> None:
    """Once the input is read: the skip note, and no objects is an error."""
    if skipped:
        print(f"magtape check: {Input(skipped=Counter(skipped)).skip_note()}", file=err)
    if not objects and not options.allow_empty:
        raise NothingChecked(
            f"no Kubernetes object was read from "
            f"{', '.join(options.paths or ('stdin',))}; "
            "pass --allow-empty if that is expected")


@dataclass(frozen=True)
class PolicySources:
    """The policy modules and data files, read once (and handed to shard processes)."""

    modules: tuple[PolicyModule, ...]
    data: dict[str, Any]

    @classmethod
    def read(cls, settings: Settings) -> PolicySources:
        data = base_data(settings)
        return cls(tuple(policy_modules(settings.engine.policy_dirs)), data)


class _Engine:
    """The embedded engine, compiling the policies in the background from the start.

    N worker processes for ``-j N``: each evaluating thread waits on its own
    worker. Cluster data found in the input (Namespace objects) is sent to
    the workers afterwards, without recompiling.
    """

    def __init__(self, settings: Settings, jobs: int,
                 policy: PolicySources | None = None) -> None:
        from magtape.engine.embedded import EmbeddedEngine

        self.jobs = max(1, min(jobs, MAX_JOBS))
        policy = policy or PolicySources.read(settings)
        self.data = policy.data
        modules = policy.modules
        self.engine = EmbeddedEngine(
            timeout_seconds=max(settings.engine.timeout_seconds, MIN_TIMEOUT_SECONDS),
            workers=self.jobs, memory_mb=settings.engine.memory_mb,
            compiled=settings.engine.compiled)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
        self._report = self._loader.submit(self.engine.load, modules, self.data)

    def ready(self, namespaces: Mapping[str, Any]) -> tuple[LoadReport, dict[str, Any]]:
        """The load report and the data, once ``namespaces`` are part of it."""
        report = self._report.result()
        data = self.data
        if namespaces:
            data = deep_merge(copy.deepcopy(self.data), {"kubernetes": {"namespaces": namespaces}})
            self.engine.update_data(data)
        return report, data

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._loader.shutdown(wait=True)  # a load in flight finishes before its workers go
        self.engine.close()


def evaluate(settings: Settings, found: Input, options: CheckOptions,
             progress: Callable[[int], None] | None = None,
             started: _Engine | None = None,
             namespaces: Mapping[str, Any] | None = None) -> CheckRun:
    """Evaluate every object, ``options.jobs`` at a time, in input order.

    ``namespaces``: the Namespace objects of the whole input, by name, when
    ``found`` is only part of it (a shard); by default those in ``found``.
    """
    catalogue = remedies_for(settings)
    if namespaces is None:
        namespaces = {m.name: m.obj for m in found.manifests if m.kind == "Namespace"}
    with contextlib.nullcontext(started) if started else _Engine(settings, options.jobs) as e:
        engine, jobs = e.engine, e.jobs
        report, data = e.ready(namespaces)
        if report.errors:
            raise InputError("policies failed to load: " + "; ".join(map(str, report.errors)))
        if not report.policies and not options.allow_empty:
            where = ", ".join(settings.engine.policy_dirs) or "the built-in policies"
            raise NothingChecked(f"no policy was loaded from {where}; "
                                 "pass --allow-empty if that is expected")
        by_kind = checks_by_kind(report.policies)
        enforcer, old_objects = _enforcement(settings, options, report.policies, data)

        def one(m: Manifest) -> ObjectResult:
            return _check_one(engine, m, options, enforcer, old_objects, catalogue,
                              by_kind.get(m.kind, ()))

        results = _map(one, found.manifests, jobs, progress)
    return CheckRun(tuple(results), report.policies, settings.deny_level, catalogue,
                    dict(found.skipped))


def checks_by_kind(policies: Iterable[PolicyInfo]) -> dict[str, tuple[PolicyInfo, ...]]:
    """The policies targeting each kind, in check ID order."""
    by_kind: dict[str, list[PolicyInfo]] = {}
    for p in sorted(policies, key=lambda p: p.errcode):
        for kind in p.targets:
            by_kind.setdefault(kind, []).append(p)
    return {kind: tuple(ps) for kind, ps in by_kind.items()}


def _enforcement(settings: Settings, options: CheckOptions, policies: Sequence[PolicyInfo],
                 data: Mapping[str, Any]) -> tuple[Enforcer, dict[ObjectKey, dict[str, Any]]]:
    """The webhook's enforcer over --exceptions/--enforcement, and the --old objects."""
    exceptions = offline.load_exceptions(
        options.exceptions, default_namespace=options.namespace,
        max_lifetime=timedelta(days=settings.exceptions.max_days),
        known_checks={p.errcode for p in policies}) if options.exceptions else []
    config = offline.load_config(options.enforcement) if options.enforcement else None
    old = offline.load_old_objects(options.old, options.namespace) if options.old else {}
    inheritance = Inheritance(frozenset(settings.exceptions.controller_identities),
                              OwnersFrom(old.values(), options.namespace or "default"))
    enforcer = offline.offline_enforcer(settings.deny_level, config=config or EnforcementConfig(),
                                        exceptions=exceptions, data=data,
                                        inheritance=inheritance)
    return enforcer, old


def _check_one(engine: Any, m: Manifest, options: CheckOptions, enforcer: Enforcer,
               old_objects: Mapping[ObjectKey, dict[str, Any]], catalogue: Catalogue,
               checks: tuple[PolicyInfo, ...]) -> ObjectResult:
    ns = m.namespace(options.namespace)
    if not checks:
        return ObjectResult(m, ns, ObjectVerdict.SKIP, checks)
    try:
        # The webhook's own decision: exceptions, overrides, UPDATE rules.
        evaluation: Evaluation
        evaluation, decision = enforcer.decide(
            offline.review_for(m.obj, ns, old_objects, options.username), engine.evaluate)
    except EngineError as exc:
        return ObjectResult(m, ns, ObjectVerdict.ERROR, checks, errors=(str(exc),))
    errors = tuple(f"policy {e.policy} ({e.errcode}) failed: {e.message}"
                   for e in evaluation.policy_errors)
    # The checks that applied (their `matches` held), not all that target the kind: a
    # Pod Security check in a namespace without a level is not a passed check.
    applied = ({r.policy for r in evaluation.results}
               | {e.policy for e in evaluation.policy_errors})
    checks = tuple(p for p in checks if p.name in applied)
    findings = tuple(
        CheckFinding(f.violation, f.verdict is DecisionVerdict.DENY,
                catalogue.for_violation(f.violation),
                f.note if f.verdict is DecisionVerdict.EXEMPTED else "",
                f.note if f.verdict is not DecisionVerdict.EXEMPTED else "")
        for f in decision.findings)
    active = [f for f in findings if not f.exemption]
    verdict = (ObjectVerdict.ERROR if errors
               else ObjectVerdict.DENIED if any(f.denies for f in active)
               else ObjectVerdict.WARN if active
               else ObjectVerdict.EXEMPT if findings
               else ObjectVerdict.PASS)
    return ObjectResult(m, ns, verdict, checks, findings, errors,
                        tuple(e.policy for e in evaluation.policy_errors))


def _map(fn: Callable[[Manifest], ObjectResult], items: Sequence[Manifest], jobs: int,
         progress: Callable[[int], None] | None) -> list[ObjectResult]:
    """``[fn(i) for i in items]``, on ``jobs`` threads, reporting progress.

    Each thread waits on its engine worker, so N threads keep N workers busy.
    On Ctrl-C the queued work is cancelled and the interrupt propagates.
    """
    if jobs == 1:
        results = []
        for i, item in enumerate(items, start=1):
            results.append(fn(item))
            if progress:
                progress(i)
        return results
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="check")
    try:
        futures = [pool.submit(fn, item) for item in items]
        for done, _ in enumerate(as_completed(futures), start=1):
            if progress:
                progress(done)
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _progress(err: TextIO, total: int) -> Callable[[int], None] | None:
    """A ``checked i/N`` line rewritten in place on a terminal; nothing otherwise."""
    if not _isatty(err) or total < 2:
        return None
    lock = threading.Lock()
    last = [0.0]

    def show(done: int) -> None:
        now = time.monotonic()
        with lock:
            if done < total and now - last[0] < 0.1:
                return
            last[0] = now
            end = "\r\033[K" if done >= total else "\r"
            err.write(f"\rmagtape check: {done}/{total} objects{end}")
            err.flush()

    return show
