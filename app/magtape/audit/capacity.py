"""The audit's own evaluation capacity, so it never competes with admission for a worker.

With the embedded engine the audit gets its own :class:`EmbeddedEngine`:
``MAGTAPE_AUDIT_WORKERS`` worker processes (default 1) that admission never
borrows. They run at the lowest CPU priority (nice 19): the engine is built
from a thread that lowered its own priority first, and on Linux a thread's
nice value is inherited by the threads it starts and by the processes they
spawn, so the pool's supervisor and every worker it (re)starts are niced
while admission's workers are not. On a busy node the scheduler serves
admission first; an idle node still audits at full speed.

:class:`Mirror` stands in for admission's engine before the policy store:
every policy set and every data update the store hands to admission's
engine is handed to the audit's engine as well (asynchronously, coalesced),
so both evaluate the same policies with the same data. ``generation``
changes after each hand-over: the audit then re-evaluates everything. Only
the leader has an audit engine: it is built when the replica starts to lead
and closed when it stops.

With the ``opa`` engine (an OPA sidecar loaded by kube-mgmt) there is no
engine of its own to build: :class:`SharedSource` evaluates through the
sidecar, and only the audit's rate limit protects admission.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from magtape.background import Worker
from magtape.engine import EngineError, Evaluator, PolicyLoader
from magtape.policy import Evaluation, LoadReport, PolicyModule
from magtape.review import Review
from magtape.settings import Settings

log = logging.getLogger(__name__)

LOWEST_PRIORITY = 19


class AuditEngine:
    """An embedded engine of the audit's own, loaded by its own (niced) thread."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cond = threading.Condition()
        self._policies: tuple[tuple[PolicyModule, ...], Mapping[str, Any]] | None = None
        self._data: Mapping[str, Any] | None = None
        self._generation = 0  # policy sets loaded
        self._data_generation = 0  # data updates taken without a new policy set
        self._engine: Any = None  # EmbeddedEngine, built in the niced thread
        self._worker = Worker("magtape-audit-engine", self._step, wake=self._wake,
                              on_start=self._build)
        self._worker.start()

    # ------------------------------------------------------------- sinks
    def submit_policies(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> None:
        with self._cond:
            self._policies, self._data = (tuple(modules), data), None
            self._cond.notify_all()

    def submit_data(self, data: Mapping[str, Any]) -> None:
        with self._cond:
            if self._policies is not None:  # the pending load takes the newest data
                self._policies = (self._policies[0], data)
            else:
                self._data = data
            self._cond.notify_all()

    # -------------------------------------------------------- as a Source
    @property
    def ready(self) -> bool:
        engine = self._engine
        return engine is not None and bool(engine.ready) and self._generation > 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    @property
    def data_generation(self) -> int:
        with self._cond:
            return self._data_generation

    def evaluate(self, review: Review) -> Evaluation:
        engine = self._engine
        if engine is None:
            raise EngineError("unavailable", "the audit's engine is starting")
        result: Evaluation = engine.evaluate(review)
        return result

    def close(self) -> None:
        self._worker.stop(30.0)
        if self._engine is not None:
            self._engine.close()

    # -------------------------------------------------------------- loop
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _build(self) -> None:
        """Lower this thread's priority, then build the engine (its workers inherit it)."""
        with contextlib.suppress(OSError, AttributeError):  # not Linux: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        from magtape.engine.embedded import EmbeddedEngine

        s = self._settings
        self._engine = EmbeddedEngine(s.engine.timeout_seconds, workers=s.audit.workers,
                                      memory_mb=s.engine.memory_mb,
                                      compiled=s.engine.compiled)

    def _step(self) -> bool:
        with self._cond:
            while not self._worker.stopping and self._policies is None and self._data is None:
                self._cond.wait()
            if self._worker.stopping:
                return False
            policies, data = self._policies, self._data
            self._policies = self._data = None
        try:
            if policies is not None:
                self._engine.load(*policies)
            elif data is not None:
                self._engine.update_data(data)
        except Exception:  # the admission engine loaded the same set; log, keep going
            # Nothing changed in the audit's engine: no new generation, so no full pass
            # over every object with the set it already had.
            log.exception("the audit's engine could not take the policy set or data; it "
                          "keeps deciding with the last one it took")
            return True
        with self._cond:
            if policies is not None:
                self._generation += 1
            else:
                self._data_generation += 1
        return True


class Mirror:
    """Admission's engine for the policy store, handing every load to the audit too.

    It remembers the last policy set and data, so an audit engine attached
    later (when this replica becomes the leader) starts from the current
    state; followers keep no audit engine at all.
    """

    def __init__(self, primary: Any) -> None:
        self._primary = primary  # Evaluator and PolicyLoader
        self._lock = threading.Lock()
        self._modules: tuple[PolicyModule, ...] | None = None
        self._data: Mapping[str, Any] = {}
        self._audit: AuditEngine | None = None

    def attach(self, audit: AuditEngine) -> None:
        with self._lock:
            self._audit = audit
            if self._modules is not None:
                audit.submit_policies(self._modules, self._data)

    def detach(self) -> None:
        with self._lock:
            self._audit = None

    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        report: LoadReport = self._primary.load(modules, data)
        with self._lock:
            self._modules, self._data = tuple(modules), data
            if self._audit is not None:
                self._audit.submit_policies(self._modules, data)
        return report

    def update_data(self, data: Mapping[str, Any]) -> None:
        self._primary.update_data(data)
        with self._lock:
            self._data = data
            if self._audit is not None:
                self._audit.submit_data(data)

    def evaluate(self, review: Review) -> Evaluation:
        result: Evaluation = self._primary.evaluate(review)
        return result

    @property
    def ready(self) -> bool:
        return bool(self._primary.ready)


class SharedSource:
    """The audit evaluating through admission's own engine (the OPA sidecar)."""

    generation = data_generation = 0  # kube-mgmt reloads OPA unseen: periodic passes catch up

    def __init__(self, engine: Evaluator) -> None:
        self._engine = engine

    @property
    def ready(self) -> bool:
        return self._engine.ready

    def evaluate(self, review: Review) -> Evaluation:
        return self._engine.evaluate(review)


class Gated:
    """A source that is ready only once admission is too (its first sync has loaded).

    Until then the policy set may be the built-in one that discovery is about
    to replace: reports written from it would be wrong for a moment.
    """

    def __init__(self, source: Any, admission_ready: Callable[[], bool]) -> None:
        self._source, self._admission_ready = source, admission_ready

    @property
    def ready(self) -> bool:
        return bool(self._admission_ready() and self._source.ready)

    @property
    def generation(self) -> int:
        return int(self._source.generation)

    @property
    def data_generation(self) -> int:
        return int(self._source.data_generation)

    def evaluate(self, review: Review) -> Evaluation:
        result: Evaluation = self._source.evaluate(review)
        return result


def is_loader(engine: Evaluator) -> bool:
    return isinstance(engine, PolicyLoader)
