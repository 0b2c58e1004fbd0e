"""List, then watch, one collection of objects and hand every change to a handler.

The loop client-go's reflector runs, reduced to what MagTape needs: a list
gives the full state and a resourceVersion; a watch from that version streams
changes; a watch that ends normally is resumed from the last version seen; a
410 Gone (the version was compacted away) leads straight to a fresh list;
any other failure waits a bounded, jittered back-off and lists again. The
handler never sees a half-applied list, and the last good state stays in
place while the API server is unreachable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from magtape.background import Backoff, Worker
from magtape.kube.objects import Obj, with_kind
from magtape.kube.rest import KubeError, RawApi, ResourceRef, WatchStream

log = logging.getLogger(__name__)


class Handler(Protocol):
    def replace(self, objects: list[Obj]) -> None:
        """The complete current state (after every list)."""

    def apply(self, event_type: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED event."""


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Reflector:
    """Keeps a handler in sync with one collection from a background thread."""

    def __init__(self, api: RawApi, ref: ResourceRef, handler: Handler, *,
                 namespace: str | None = None, label_selector: str | None = None,
                 watch_timeout_seconds: int = 300, backoff: Backoff | None = None,
                 on_synced: Callable[[], None] | None = None) -> None:
        self._api, self.ref, self._handler = api, ref, handler
        self._namespace, self._selector = namespace, label_selector
        self._watch_timeout = watch_timeout_seconds
        self._backoff = backoff or Backoff()
        self._on_synced = on_synced
        self.synced = threading.Event()  # set after the first successful list
        # The last list failed because the API server does not serve the resource
        # (a CRD not installed): there are no objects to miss.
        self.not_served = False
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._worker = Worker(f"magtape-watch-{ref.plural}", self._step, wake=self._close_stream)
        where = f" in {namespace}" if namespace else ""
        sel = f" ({label_selector})" if label_selector else ""
        self.description = f"{ref}{where}{sel}"

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def _close_stream(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    # ------------------------------------------------------------------ loop
    def _step(self) -> None:
        """One list, then watches until one fails or a stop is requested."""
        try:
            version = self._list()
            while not self._worker.stopping:
                version = self._watch(version)
        except _Gone:
            log.info("watch of %s expired (410 Gone): listing again", self.description)
        except KubeError as exc:
            self.not_served = exc.not_served
            delay = self._backoff.next()
            log.warning("list/watch of %s failed: %s; retrying in %.1fs (serving the "
                        "last known state meanwhile)", self.description, exc, delay)
            self._worker.wait(delay)
        except Exception:  # a handler defect must not end replication for good
            delay = self._backoff.next()
            log.exception("handling %s failed; listing again in %.1fs", self.description,
                          delay)
            self._worker.wait(delay)

    def _list(self) -> str:
        doc = self._api.list(self.ref, self._namespace, self._selector)
        items = doc.get("items") or []
        with_kind(items, doc, self.ref.group_version)  # as watch events carry them
        self._handler.replace(items)
        self._backoff.reset()
        self.not_served = False
        if not self.synced.is_set():
            self.synced.set()
            log.info("synced %s: %d object(s)", self.description, len(items))
            if self._on_synced is not None:
                self._on_synced()
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        stream = self._api.watch(self.ref, self._namespace, version, self._selector,
                                 self._watch_timeout)
        with self._lock:
            self._stream = stream
        if self._worker.stopping:
            stream.close()
        try:
            for event in stream:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise _Gone()
                    raise KubeError(int(code or 0), str(obj.get("reason") or "WatchError"),
                                    str(obj.get("message") or "watch error"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._handler.apply(str(kind), obj)
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return version
