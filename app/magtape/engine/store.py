"""The policy set and data a loading engine serves, handed over by two lanes.

Policy discovery changes the modules, replication changes sections of
``data``. Each kind of change has its own lane (a thread): the policy lane
calls ``loader.load(modules, data)`` (vetting, possibly seconds for a slow
policy), the data lane calls ``loader.update_data(data)`` (no recompiling), so
a namespace change never waits behind a policy ConfigMap being vetted. A burst
of changes during one hand-over collapses into a single next one. Listeners
(policy discovery's status writer, the enforcement state) get every load
report together with the modules it was built from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magtape.background import Worker
from magtape.engine import PolicyLoader
from magtape.metrics import Metrics
from magtape.policy import LoadReport, PolicyModule

log = logging.getLogger(__name__)

DataPath = tuple[str, ...]
Listener = Callable[[LoadReport, tuple[PolicyModule, ...]], None]


@dataclass
class _Generations:
    """One kind of change: the generation it last changed at and last handed over."""

    name: str
    changed: int = 0
    done: int = 0
    worker: Worker | None = None

    @property
    def pending(self) -> bool:
        return self.changed > self.done


class PolicyStore:
    """Owns the current modules (local or discovered) and data; thread-safe."""

    def __init__(self, loader: PolicyLoader, metrics: Metrics | None,
                 local_modules: Sequence[PolicyModule],
                 base_data: Mapping[str, Any] | None = None) -> None:
        self._loader = loader
        self._metrics = metrics
        self._local = tuple(local_modules)
        self._discovered: tuple[PolicyModule, ...] | None = None  # None: use the local set
        self._base: Mapping[str, Any] = dict(base_data or {})
        self._sections: dict[DataPath, Any] = {}
        self._cond = threading.Condition()
        self._generation = 0  # bumped by every change
        self._policies = _Generations("policies", changed=0, done=-1)  # nothing loaded yet
        self._data = _Generations("data")
        self._listeners: list[Listener] = []
        self._stopped = False
        self.last_report: LoadReport | None = None

    # --------------------------------------------------------------- changes
    def set_modules(self, modules: Sequence[PolicyModule] | None) -> bool:
        """Serve ``modules`` (``None``: the local set again); False when nothing changed."""
        new = tuple(modules) if modules is not None else None
        with self._cond:
            if new == self._discovered:
                return False
            self._discovered = new
            return self._changed(self._policies)

    def set_data(self, path: DataPath, value: Any) -> bool:
        """Replace the data at ``path`` (e.g. ``("kubernetes", "namespaces")``)."""
        with self._cond:
            if path in self._sections and self._sections[path] == value:
                return False
            self._sections[path] = value
            return self._changed(self._data)

    def _changed(self, lane: _Generations) -> bool:
        self._generation += 1
        lane.changed = self._generation
        self._cond.notify_all()
        return True

    def add_listener(self, listener: Listener) -> None:
        with self._cond:
            self._listeners.append(listener)

    # ------------------------------------------------------------- snapshots
    @property
    def modules(self) -> tuple[PolicyModule, ...]:
        with self._cond:
            return self._discovered if self._discovered is not None else self._local

    def data(self) -> dict[str, Any]:
        """``data`` for the engine: the data files with the replicated sections on top."""
        with self._cond:
            out = dict(self._base)
            for path, value in self._sections.items():
                node = out
                for key in path[:-1]:
                    child = node.get(key)
                    # Copy along the path: the data files' dicts are never mutated.
                    node[key] = dict(child) if isinstance(child, Mapping) else {}
                    node = node[key]
                node[path[-1]] = value
            return out

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    @property
    def loaded_generation(self) -> int:
        """Every change up to this generation has reached the engine."""
        with self._cond:
            lagging = [lane.done for lane in (self._policies, self._data) if lane.pending]
            return min(lagging) if lagging else self._generation

    # ---------------------------------------------------------------- loading
    def load_now(self) -> LoadReport | None:
        """Load the current snapshot in the calling thread (start-up)."""
        with self._cond:
            generation, modules, data = self._generation, self.modules, self.data()
            self._data.done = max(self._data.done, generation)  # load() takes the data too
        return self._load(generation, modules, data)

    def _load(self, generation: int, modules: tuple[PolicyModule, ...],
              data: dict[str, Any]) -> LoadReport | None:
        report: LoadReport | None = None
        try:
            report = self._loader.load(modules, data)
        except Exception:  # the engine reports policy errors itself; this is a defect
            log.exception("loading the policy set failed; the previous set stays active")
        if report is not None:
            self.last_report = report
            if self._metrics is not None:
                self._metrics.observe_load(report)
            with self._cond:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(report, modules)
                except Exception:
                    log.exception("a policy-load listener failed")
        self._finished(self._policies, generation)
        return report

    def _update_data(self, generation: int, data: dict[str, Any]) -> None:
        try:
            self._loader.update_data(data)
        except Exception:
            log.exception("updating the policies' data failed; the previous data stays active")
        self._finished(self._data, generation)

    def _finished(self, lane: _Generations, generation: int) -> None:
        with self._cond:
            lane.done = max(lane.done, generation)
            self._cond.notify_all()

    def start(self) -> None:
        for lane, step in ((self._policies, self._policy_step), (self._data, self._data_step)):
            lane.worker = Worker(f"magtape-store-{lane.name}", step, wake=self._wake).start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next(self, lane: _Generations) -> int | None:
        """Wait for a change in ``lane``; its generation, None once stopped."""
        with self._cond:
            while not self._stopped and not lane.pending:
                self._cond.wait()
            return None if self._stopped else self._generation

    def _policy_step(self) -> bool:
        if (generation := self._next(self._policies)) is None:
            return False
        with self._cond:
            modules, data = self.modules, self.data()
        self._load(generation, modules, data)
        with self._cond:
            if self._data.changed > generation:
                # The data lane handed over newer data while this load ran;
                # the load has just replaced it with its older snapshot.
                self._changed(self._data)
        return True

    def _data_step(self) -> bool:
        if (generation := self._next(self._data)) is None:
            return False
        with self._cond:
            data = self.data()
        self._update_data(generation, data)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
        workers = [lane.worker for lane in (self._policies, self._data) if lane.worker]
        for worker in workers:
            worker.request_stop()
        for worker in workers:
            worker.join(timeout)
