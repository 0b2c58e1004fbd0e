"""The policy set and data the engine serves, reloaded by one worker thread.

Policy discovery changes the modules, replication changes sections of
``data``; either marks the store dirty and the worker calls
``engine.load(modules, data)`` with a consistent snapshot of both. A burst of
changes during one load collapses into a single next load, so a flood of
Namespace events costs a few compiles, not one per event. Listeners (policy
discovery's status writer) get every report together with the modules it was
built from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from magtape.engine import PolicyEngine
from magtape.metrics import Metrics
from magtape.policy import LoadReport, PolicyModule

log = logging.getLogger(__name__)

DataPath = tuple[str, ...]
Listener = Callable[[LoadReport, tuple[PolicyModule, ...]], None]


class PolicyStore:
    """Owns the current modules (local or discovered) and data; thread-safe."""

    def __init__(self, engine: PolicyEngine, metrics: Metrics | None,
                 local_modules: Sequence[PolicyModule],
                 base_data: Mapping[str, Any] | None = None) -> None:
        self._engine = engine
        self._metrics = metrics
        self._local = tuple(local_modules)
        self._discovered: tuple[PolicyModule, ...] | None = None  # None: use the local set
        self._base: Mapping[str, Any] = dict(base_data or {})
        self._sections: dict[DataPath, Any] = {}
        self._cond = threading.Condition()
        self._generation = 0  # bumped by every change
        self._loaded = -1  # generation of the last finished load
        self._listeners: list[Listener] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.last_report: LoadReport | None = None

    # --------------------------------------------------------------- changes
    def set_modules(self, modules: Sequence[PolicyModule] | None) -> bool:
        """Serve ``modules`` (``None``: the local set again); False when nothing changed."""
        new = tuple(modules) if modules is not None else None
        with self._cond:
            if new == self._discovered:
                return False
            self._discovered = new
            return self._changed()

    def set_data(self, path: DataPath, value: Any) -> bool:
        """Replace the data at ``path`` (e.g. ``("kubernetes", "namespaces")``)."""
        with self._cond:
            if path in self._sections and self._sections[path] == value:
                return False
            self._sections[path] = value
            return self._changed()

    def _changed(self) -> bool:
        self._generation += 1
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
        with self._cond:
            return self._loaded

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``predicate()`` is truthy, re-checking after every load; its last value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return value
                self._cond.wait(min(left, 0.5))
            return value

    # ---------------------------------------------------------------- loading
    def load_now(self) -> LoadReport | None:
        """Load the current snapshot in the calling thread (start-up)."""
        with self._cond:
            generation, modules, data = self._generation, self.modules, self.data()
        return self._load(generation, modules, data)

    def _load(self, generation: int, modules: tuple[PolicyModule, ...],
              data: dict[str, Any]) -> LoadReport | None:
        report: LoadReport | None = None
        try:
            report = self._engine.load(modules, data)
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
        with self._cond:
            self._loaded = max(self._loaded, generation)
            self._cond.notify_all()
        return report

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="magtape-policy-store",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and self._loaded >= self._generation:
                    self._cond.wait()
                if self._stopped:
                    return
                generation, modules, data = self._generation, self.modules, self.data()
            self._load(generation, modules, data)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
