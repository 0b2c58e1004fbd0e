"""The running audit: watch the target kinds, evaluate what changed, keep the reports current.

One reflector per audited resource (plus one for Namespaces, for the opt-in
label) feeds a cache of trimmed objects; every object that appears or changes
in a way admission would see is marked dirty (a de-duplicating work queue, as
client-go's). One worker thread takes dirty objects at a bounded rate (a
token bucket: ``MAGTAPE_AUDIT_RATE`` objects per second), decides each with
the :class:`~magtape.audit.results.Auditor` and, at most once per write
interval, rebuilds the reports of the namespaces that changed and the
metrics. A full pass (every object dirty again) starts when the policy set or
its data changes, when exceptions or overrides change, when an exception
expires or a ``denyFrom`` date arrives, and every ``MAGTAPE_AUDIT_INTERVAL_SECONDS``.

The controller runs only while this replica leads (see :mod:`magtape.audit.lease`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from magtape.audit.kinds import KIND_OF, owned_by_audited
from magtape.audit.report import ReportLimits, build_report
from magtape.audit.results import Auditor, ObjectAudit, trimmed
from magtape.audit.tally import tally
from magtape.audit.writer import ReportWriter
from magtape.background import Backoff, TokenBucket, Worker
from magtape.enforcement import utc_now
from magtape.kube.informers import Informer, Informers
from magtape.kube.objects import Obj, labels, metadata, name
from magtape.kube.reflector import Handler
from magtape.kube.rest import NAMESPACES, KubeError, ResourceRef
from magtape.metrics import AuditMetrics
from magtape.namespaces import NamespaceDirectory

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # namespace, kind, name
METRICS_INTERVAL_SECONDS = 5.0


class Source(Protocol):
    """The audit's evaluator, as the controller sees it."""

    @property
    def ready(self) -> bool:
        """A policy set is loaded: evaluating now gives real answers."""
        ...

    @property
    def generation(self) -> int:
        """Changes whenever the policy set changes (a full pass is due at once)."""
        ...

    @property
    def data_generation(self) -> int:
        """Changes whenever the policies' data changes (a full pass is due soon)."""
        ...


@dataclass(frozen=True)
class AuditOptions:
    rate_per_second: float = 100.0
    write_interval_seconds: float = 1.0
    full_interval_seconds: float = 3600.0
    # Data (namespaces, replicated kinds) can change often: a full pass for it
    # starts at most this long after the previous one started.
    data_pass_seconds: float = 60.0
    all_namespaces: bool = False
    limits: ReportLimits = field(default_factory=ReportLimits)
    backoff_max_seconds: float = 30.0


class _Stoppable(Protocol):
    """A stop event or a :class:`~magtape.background.Worker`: ``wait`` is True once stopped."""

    def wait(self, seconds: float | None, /) -> bool: ...


def take_token(bucket: TokenBucket, stop: _Stoppable) -> bool:
    """Wait for a token of ``bucket``; False when ``stop`` is set meanwhile."""
    while not bucket.try_take():
        if stop.wait(bucket.seconds_to_next()):
            return False
    return True


class _KindHandler:
    def __init__(self, controller: AuditController, kind: str) -> None:
        self._c, self._kind = controller, kind

    def replace(self, objects: list[Obj]) -> None:
        self._c._replace_kind(self._kind, objects)

    def apply(self, event_type: str, obj: Obj) -> None:
        self._c._apply(self._kind, event_type, obj)


class _NamespaceHandler:
    """The opt-in directory, plus "re-evaluate this namespace" when its labels change."""

    def __init__(self, controller: AuditController) -> None:
        self._c = controller
        self.directory = NamespaceDirectory()
        self._labels: dict[str, dict[str, str]] = {}

    def replace(self, objects: list[Obj]) -> None:
        self.directory.replace(objects)
        old, self._labels = self._labels, {self._name(o): self._of(o) for o in objects}
        self._c._namespaces_changed(n for n in {*old, *self._labels}
                                    if old.get(n) != self._labels.get(n))

    def apply(self, event_type: str, obj: Obj) -> None:
        self.directory.apply(event_type, obj)
        name = self._name(obj)
        labels = None if event_type == "DELETED" else self._of(obj)
        if self._labels.get(name) != labels:
            if labels is None:
                self._labels.pop(name, None)
            else:
                self._labels[name] = labels
            self._c._namespaces_changed([name])

    @staticmethod
    def _name(obj: Obj) -> str:
        return name(obj)

    @staticmethod
    def _of(obj: Obj) -> dict[str, str]:
        return labels(obj)


class AuditController:
    """Keeps the PolicyReports and audit metrics current while started."""

    def __init__(self, informers: Informers, kinds: list[ResourceRef], auditor: Auditor,
                 source: Source, metrics: AuditMetrics, options: AuditOptions = AuditOptions(),
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._informers, self._auditor, self._source = informers, auditor, source
        self._metrics, self._opts, self._clock = metrics, options, clock
        self._kinds = {KIND_OF.get(ref.plural, ref.plural): ref for ref in kinds}
        self._kind_names = frozenset(self._kinds)
        self._cond = threading.Condition()
        self._objects: dict[Key, Obj] = {}
        self._by_ns: dict[str, set[Key]] = {}
        self._dirty: dict[Key, None] = {}  # insertion-ordered set
        self._audits: dict[str, dict[Key, ObjectAudit]] = {}
        self._dirty_ns: set[str] = set()
        self._worker = Worker("magtape-audit", self._step, wake=self._wake,
                              on_start=self._load_existing,
                              backoff=Backoff(1.0, options.backoff_max_seconds))
        self._last_flush = 0.0
        self._namespaces = _NamespaceHandler(self)
        self._watching: list[tuple[Informer, Handler]] = []
        self.writer = ReportWriter(informers.api, metrics.report_writes.inc)
        self._bucket = TokenBucket(options.rate_per_second)
        # Full passes
        self._generation: int | None = None
        self._data_generation = 0
        self._enforcement: tuple[Any, ...] = ()
        self._transition: datetime | None = None
        self._last_full = 0.0
        self._pass_started: float | None = None
        self._orphans_checked = False
        self._busy = 0  # an object being evaluated or reports being written
        self._metrics_stale = False  # findings changed since the metrics were computed
        self._last_tally = 0.0

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Join the process' shared watches (the informer replays what it has) and start."""
        handlers: list[tuple[ResourceRef, Handler]] = [(NAMESPACES, self._namespaces)]
        handlers += [(ref, _KindHandler(self, kind)) for kind, ref in sorted(self._kinds.items())]
        self._watching = [(self._informers.subscribe(ref, handler), handler)
                          for ref, handler in handlers]
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, and leave the watches (an audited kind nobody else follows stops)."""
        self._worker.request_stop()
        watching, self._watching = self._watching, []
        for informer, handler in watching:
            self._informers.release(informer, handler)
        self._worker.join(timeout)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def synced(self) -> bool:
        watching = self._watching
        return bool(watching) and all(i.synced.is_set() for i, _ in watching)

    @property
    def idle(self) -> bool:
        """Nothing left to evaluate or write (tests, benchmarks)."""
        with self._cond:
            return self.synced and not self._dirty and not self._dirty_ns and not self._busy \
                and not self._metrics_stale and self._pass_started is None \
                and self._generation is not None

    # ------------------------------------------------------- watch events
    def _in_scope(self, namespace: str) -> bool:
        return self._opts.all_namespaces or self._namespaces.directory.opted_in(namespace)

    def _replace_kind(self, kind: str, objects: list[Obj]) -> None:
        if objects and objects[0].get("kind"):
            # The reflector names list items by the List's kind: learn it for a
            # resource KIND_OF does not know, so ownerReferences to it match.
            self._kind_names = self._kind_names | {str(objects[0]["kind"])}
        fresh = {}
        for obj in objects:
            key = self._key(kind, obj)
            if key is not None and not owned_by_audited(obj, self._kind_names):
                fresh[key] = obj
        with self._cond:
            for key in [k for k in self._objects if k[1] == kind and k not in fresh]:
                self._forget(key)
            for key, obj in fresh.items():
                self._put(key, obj)
            self._cond.notify_all()

    def _apply(self, kind: str, event_type: str, obj: Obj) -> None:
        key = self._key(kind, obj)
        if key is None:
            return
        with self._cond:
            if event_type == "DELETED" or owned_by_audited(obj, self._kind_names):
                self._forget(key)
            else:
                self._put(key, obj)
            self._cond.notify_all()

    def _namespaces_changed(self, names: Iterable[str]) -> None:
        with self._cond:
            for ns in names:
                for key in self._by_ns.get(ns, ()):
                    self._dirty[key] = None
                self._dirty_ns.add(ns)
            self._cond.notify_all()

    @staticmethod
    def _key(kind: str, obj: Obj) -> Key | None:
        meta = metadata(obj)
        ns, name = meta.get("namespace"), meta.get("name")
        if not isinstance(ns, str) or not ns or not isinstance(name, str):
            return None  # cluster-scoped: no namespace report to put it in
        return ns, kind, name

    def _put(self, key: Key, obj: Obj) -> None:
        small = trimmed(obj if obj.get("kind") else {**obj, "kind": key[1]})
        if self._objects.get(key) == small:
            return  # a status-only change: admission would decide the same
        self._objects[key] = small
        self._by_ns.setdefault(key[0], set()).add(key)
        self._dirty[key] = None

    def _forget(self, key: Key) -> None:
        if self._objects.pop(key, None) is None:
            return
        keys = self._by_ns.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_ns[key[0]]
        self._dirty[key] = None

    # -------------------------------------------------------------- worker
    def _load_existing(self) -> None:
        """Learn the reports a previous leader left, so unchanged ones are not rewritten."""
        backoff = Backoff(0.5, self._opts.backoff_max_seconds)
        while not self._worker.stopping:
            try:
                self.writer.load_existing()
                return
            except KubeError as exc:
                delay = backoff.next()
                log.warning("audit: cannot list the PolicyReports (%s; is the CRD installed? "
                            "see components/policyreport-crd); retrying in %.1fs", exc, delay)
                self._worker.wait(delay)

    def _step(self) -> None:
        """Evaluate one dirty object (or wait a little for one); flush reports when due.

        A defect is logged by the worker, which runs the next step after a back-off.
        """
        if not self.synced or not self._source.ready:
            self._worker.wait(0.05)
            return
        self._maybe_full_pass()
        now = time.monotonic()
        if now - self._last_flush >= self._opts.write_interval_seconds:
            self._last_flush = now
            self._flush()
        key = self._next(timeout=min(0.5, self._opts.write_interval_seconds))
        if key is None:
            return
        try:
            # Only evaluations are rate-limited; forgetting an object is free.
            if not self._in_scope(key[0]) or take_token(self._bucket, self._worker):
                self._process(key)
        finally:
            with self._cond:
                self._busy -= 1

    def _next(self, timeout: float) -> Key | None:
        with self._cond:
            if not self._dirty:
                self._finish_pass()
                self._cond.wait(timeout)
            if not self._dirty:
                return None
            key = next(iter(self._dirty))
            del self._dirty[key]
            self._busy += 1  # until _process has stored its audit
            self._metrics.queue.set(len(self._dirty))
            return key

    def _process(self, key: Key) -> None:
        ns = key[0]
        with self._cond:
            obj = self._objects.get(key) if self._in_scope(ns) else None
        audit = self._auditor.audit(obj) if obj is not None else None
        if audit is not None:
            self._metrics.evaluations.inc()
        with self._cond:
            found = self._audits.setdefault(ns, {})
            if audit is None:
                found.pop(key, None)
            else:
                found[key] = audit
            if not found:
                del self._audits[ns]
            self._dirty_ns.add(ns)

    # --------------------------------------------------------- full passes
    def _enforcement_snapshot(self) -> tuple[Any, ...]:
        state = self._auditor.enforcer.state
        return (state.config, *state.all_exceptions())

    def _maybe_full_pass(self) -> None:
        generation, data_generation = self._source.generation, self._source.data_generation
        since = time.monotonic() - self._last_full
        snapshot = self._enforcement_snapshot()
        now = self._clock()
        why = ("start" if self._generation is None
               else "policy set or data changed" if generation != self._generation
               else "exceptions or overrides changed" if not _same(snapshot, self._enforcement)
               else "an exception expired or a denyFrom date arrived"
               if self._transition is not None and now >= self._transition
               else "the policies' data changed" if data_generation != self._data_generation
               and since >= min(self._opts.data_pass_seconds, self._opts.full_interval_seconds)
               else "periodic" if since >= self._opts.full_interval_seconds else "")
        if not why:
            return
        self._generation, self._enforcement = generation, snapshot
        self._data_generation = data_generation
        self._transition = self._auditor.enforcer.state.next_transition(now)
        self._last_full = time.monotonic()
        with self._cond:
            for key in self._objects:
                self._dirty[key] = None
            # namespaces with audits but no objects any more (left scope, emptied)
            for ns in list(self._audits):
                for key in [k for k in self._audits[ns] if k not in self._objects]:
                    self._dirty[key] = None
            if self._pass_started is None:
                self._pass_started = time.monotonic()
            log.info("audit: full pass of %d objects (%s)", len(self._dirty), why)

    def _finish_pass(self) -> None:
        """Called with the lock held when nothing is dirty."""
        if self._pass_started is None:
            return
        duration = time.monotonic() - self._pass_started
        self._pass_started = None
        self._metrics.passes.inc()
        self._metrics.duration.set(duration)
        self._metrics.last_completed.set(time.time())
        if not self._orphans_checked:
            # Reports a previous leader wrote for namespaces with nothing left.
            self._orphans_checked = True
            self._dirty_ns.update(ns for ns in self.writer.namespaces if ns not in self._audits)
        log.info("audit: full pass done in %.1fs (%d objects in scope)", duration,
                 sum(len(a) for a in self._audits.values()))

    # -------------------------------------------------------------- output
    def _flush(self) -> None:
        with self._cond:
            # During a full pass a namespace is written once its objects are all
            # done, so a report is not rewritten for every object of the pass.
            pending = {k[0] for k in self._dirty} if self._pass_started is not None else set()
            namespaces = {ns for ns in self._dirty_ns if ns not in pending}
            self._dirty_ns -= namespaces
            wanted = {ns: build_report(ns, self._audits[ns].values(), self._opts.limits)
                      if ns in self._audits else None for ns in namespaces
                      if ns in self._audits or not self._has_objects(ns)}
            self._metrics_stale |= bool(namespaces)
            # The metrics are recomputed from every audit (holding the GIL, in
            # proportion to the objects): at once when the queue is empty, else at most every
            # METRICS_INTERVAL_SECONDS, so a long pass does not tax admission for it.
            now = time.monotonic()
            audits = None
            if self._metrics_stale and (not self._dirty or now - self._last_tally
                                        >= METRICS_INTERVAL_SECONDS):
                audits = [a for found in self._audits.values() for a in found.values()]
                self._metrics_stale, self._last_tally = False, now
            if not wanted and audits is None:
                return
            self._busy += 1
        retry: set[str] = set()
        try:
            retry = {ns for ns, report in sorted(wanted.items(), key=lambda kv: kv[0])
                     if not self.writer.sync(ns, report)}
            if audits is not None:
                self._metrics.set_findings(*tally(audits))
        finally:
            with self._cond:
                self._busy -= 1
                self._dirty_ns |= retry

    def _has_objects(self, namespace: str) -> bool:
        """Objects of ``namespace`` in scope still to be audited (its report stays)."""
        return namespace in self._by_ns and self._in_scope(namespace)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
