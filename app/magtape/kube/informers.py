"""One list/watch per resource in a process, shared by every part that needs it.

Why it exists: the webhook's namespace directory, the policies' replicated
data, the enforcement state and the audit all follow the same collections
(Namespaces above all). Each used to run its own reflector, so one process
listed and watched Namespaces up to three times. Here, as client-go's shared
informers and kopf's one watch per resource do, each (resource, namespace,
label selector) has exactly one :class:`Informer`: one reflector whose
changes fan out to every handler registered on it. The informer keeps the
current objects (without ``managedFields``, which no handler needs), so a
handler that joins late (the audit, when its replica becomes the leader)
starts from the full current state instead of causing another list.

The timings (watch timeout, back-off) are set once, on the :class:`Informers`
that owns them all; tests shorten them there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from magtape.background import Backoff
from magtape.kube.objects import Obj, key_of, without_managed_fields
from magtape.kube.reflector import Handler, Reflector
from magtape.kube.rest import RawApi, ResourceRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchTimings:
    """How long a watch runs before it is renewed, and how retries back off."""

    watch_timeout_seconds: int = 300
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0


@dataclass(frozen=True)
class Selection:
    """What one informer follows: a resource, optionally one namespace and a label selector."""

    ref: ResourceRef
    namespace: str | None = None
    label_selector: str | None = None


class Informer:
    """One reflector's objects, handed to every registered handler in the order received.

    Handlers are called on the reflector's thread, one after another; a handler
    that raises does not keep the others from the change (the reflector then
    lists again, and every handler gets the full state once more).
    """

    def __init__(self, api: RawApi, selection: Selection, timings: WatchTimings) -> None:
        self.selection = selection
        self._lock = threading.Lock()
        self._handlers: list[Handler] = []
        self._on_synced: list[Callable[[], None]] = []
        self._objects: dict[tuple[str, str], Obj] = {}
        self._reflector = Reflector(
            api, selection.ref, self, namespace=selection.namespace,
            label_selector=selection.label_selector,
            watch_timeout_seconds=timings.watch_timeout_seconds,
            backoff=Backoff(timings.backoff_initial_seconds, timings.backoff_max_seconds),
            on_synced=self._synced_now)
        self.synced = self._reflector.synced  # set after the first successful list
        self.description = self._reflector.description
        self.started = False

    @property
    def not_served(self) -> bool:
        """The API server does not serve the resource (a CRD not installed), as of the
        last list."""
        return self._reflector.not_served

    def get(self, namespace: str, name: str) -> Obj | None:
        """The current object (without managedFields), or None. Never waits: a read of
        the dict the reflector's thread replaces whole or changes one key at a time
        (each a single, atomic dict operation), so no lock is taken on admission's path."""
        return self._objects.get((namespace, name))

    # ------------------------------------------------------------ handlers
    def add(self, handler: Handler, on_synced: Callable[[], None] | None = None) -> None:
        """Register ``handler``; once synced it first gets the current objects (replace)."""
        with self._lock:
            if self.synced.is_set():
                handler.replace(list(self._objects.values()))
            self._handlers.append(handler)
            if on_synced is not None:
                if self.synced.is_set():
                    on_synced()
                else:
                    self._on_synced.append(on_synced)

    def remove(self, handler: Handler) -> bool:
        """Unregister ``handler``; True when no handler is left."""
        with self._lock:
            self._handlers = [h for h in self._handlers if h is not handler]
            return not self._handlers

    # ------------------------------------------------- the reflector's side
    def replace(self, objects: list[Obj]) -> None:
        with self._lock:
            slim = [without_managed_fields(o) for o in objects]
            self._objects = {key_of(o): o for o in slim}
            self._each(lambda h: h.replace(slim))

    def apply(self, event_type: str, obj: Obj) -> None:
        with self._lock:
            slim = without_managed_fields(obj)
            if event_type == "DELETED":
                self._objects.pop(key_of(slim), None)
            else:
                self._objects[key_of(slim)] = slim
            self._each(lambda h: h.apply(event_type, slim))

    def _each(self, call: Callable[[Handler], None]) -> None:
        failed: Exception | None = None
        for handler in self._handlers:
            try:
                call(handler)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def _synced_now(self) -> None:
        with self._lock:
            callbacks, self._on_synced = self._on_synced, []
        for callback in callbacks:
            callback()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self.started:
            self.started = True
            self._reflector.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._reflector.stop(timeout)


class Informers:
    """Every informer of one process: created on first use, started and stopped together.

    Informers asked for before :meth:`start` start with it (the wiring
    registers every handler first, so nothing misses the first list); one
    asked for later starts at once. :meth:`release` stops an informer whose
    last handler left (the audit's kinds when its replica stops leading).
    """

    def __init__(self, api: RawApi, timings: WatchTimings | None = None) -> None:
        self.api, self.timings = api, timings or WatchTimings()
        self._lock = threading.Lock()
        self._informers: dict[Selection, Informer] = {}
        self._running = False

    def informer(self, ref: ResourceRef, namespace: str | None = None,
                 label_selector: str | None = None) -> Informer:
        selection = Selection(ref, namespace, label_selector)
        with self._lock:
            informer = self._informers.get(selection)
            if informer is None:
                informer = self._informers[selection] = Informer(self.api, selection,
                                                                 self.timings)
            if self._running:
                informer.start()
            return informer

    def subscribe(self, ref: ResourceRef, handler: Handler, *, namespace: str | None = None,
                  label_selector: str | None = None,
                  on_synced: Callable[[], None] | None = None) -> Informer:
        """Register ``handler`` on the informer for this selection (created if needed)."""
        informer = self.informer(ref, namespace, label_selector)
        informer.add(handler, on_synced)
        return informer

    def release(self, informer: Informer, handler: Handler) -> None:
        """Unregister ``handler``; stop and forget the informer when it was the last one."""
        if informer.remove(handler):
            with self._lock:
                if self._informers.get(informer.selection) is informer:
                    del self._informers[informer.selection]
            informer.stop()

    def start(self) -> None:
        with self._lock:
            self._running = True
            informers = list(self._informers.values())
        for informer in informers:
            informer.start()
        if informers:
            log.info("watching %s", ", ".join(i.description for i in informers))

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._running = False
            informers = list(self._informers.values())
        for informer in informers:
            informer.stop(timeout)

    @property
    def selections(self) -> list[Selection]:
        with self._lock:
            return list(self._informers)
