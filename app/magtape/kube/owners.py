"""The owners controllers derive objects from, kept in memory by watches.

Admission asks "does the owner this ownerReference names exist, and what is
its spec?" for every object a controller creates (magtape.enforcement.
inheritance). Asking the API server there would make admission wait on it,
and fail when it fails; instead one reflector per owner kind
(``MAGTAPE_CONTROLLER_OWNER_KINDS``) keeps the owners in memory, without
status or managedFields, and a lookup is a dictionary read. Until a kind's
first list completes, or for an owner created a moment ago and not yet seen,
the lookup finds nothing and the object is judged on its own (its
controller retries, and the retry finds it); while the API server is
unreachable the last known owners stay.

A resource the API server does not serve at the configured version is
looked up at the known older one (``batch/v1/cronjobs`` is
``batch/v1beta1/cronjobs`` before Kubernetes 1.21), else left out with one
log line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from magtape.background import Backoff
from magtape.kube.reflector import Reflector
from magtape.kube.rest import KubeError, RawApi, ResourceRef
from magtape.settings import KindRef

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NOT_SERVED = "the server could not find the requested resource"
# Older versions a resource was served at, tried when the configured one is not served.
OLDER_VERSIONS = {ResourceRef("batch/v1", "cronjobs"): ResourceRef("batch/v1beta1", "cronjobs")}


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


# kubectl's copy of the whole manifest: bookkeeping, and often half of an owner's size.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _packed(obj: Obj) -> bytes:
    """The owner as compact JSON, without status, managedFields and kubectl's last-applied
    copy: about a fifth of the memory the parsed object takes (a lookup parses it again,
    and lookups happen only for a controller's object with a failure that would deny)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    trimmed = {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}
    return json.dumps(trimmed, separators=(",", ":")).encode()


class _KindHandler:
    """Reflector handler for one owner resource: its objects by kind, namespace and name."""

    def __init__(self, ref: ResourceRef) -> None:
        self.group = _group(ref.group_version)
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], bytes] = {}

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            packed = self._objects.get((kind, namespace, name))
        if packed is None:
            return None
        found: Obj = json.loads(packed)
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def replace(self, objects: list[Obj]) -> None:
        fresh = {key: _packed(o) for o in objects if (key := _key(o)) is not None}
        with self._lock:
            self._objects = fresh

    def apply(self, event_type: str, obj: Obj) -> None:
        key = _key(obj)
        if key is None:
            return
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(key, None)
            else:
                self._objects[key] = _packed(obj)


def _key(obj: Obj) -> tuple[str, str, str] | None:
    meta = obj.get("metadata") or {}
    ns, name, kind = meta.get("namespace"), meta.get("name"), obj.get("kind")
    if not (isinstance(ns, str) and isinstance(name, str) and isinstance(kind, str)):
        return None
    return kind, ns, name


class OwnerCache:
    """Owners by group, kind, namespace and name; an :class:`OwnerLookup` that never blocks."""

    def __init__(self, api: RawApi, kinds: Iterable[KindRef], *, probe_namespace: str,
                 watch_timeout_seconds: int = 300, backoff_max_seconds: float = 30.0) -> None:
        self._api = api
        self._refs = [ResourceRef(k.group_version, k.plural) for k in kinds]
        self._probe_namespace = probe_namespace
        self._watch_timeout = watch_timeout_seconds
        self._backoff_max = backoff_max_seconds
        self._handlers: list[_KindHandler] = []
        self.reflectors: list[Reflector] = []
        self._starter: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------ lookups
    def owner(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        group, kind, name = (_group(str(ref.get("apiVersion", ""))), str(ref.get("kind", "")),
                             str(ref.get("name", "")))
        for handler in list(self._handlers):
            if handler.group == group:
                found = handler.get(kind, namespace, name)
                if found is not None:
                    return found
        return None

    @property
    def synced(self) -> bool:
        return bool(self.reflectors) and all(r.synced.is_set() for r in self.reflectors)

    def __len__(self) -> int:
        return sum(len(h) for h in list(self._handlers))

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Find the served versions and start one reflector each, off the caller's thread."""
        self._starter = threading.Thread(target=self._start_reflectors, daemon=True,
                                         name="magtape-owners-start")
        self._starter.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._starter is not None:
            self._starter.join(timeout)
        for r in list(self.reflectors):
            r.stop(timeout)

    def _start_reflectors(self) -> None:
        for ref in self._refs:
            served = self._served(ref)
            if served is None or self._stopped.is_set():
                continue
            handler = _KindHandler(served)
            self._handlers.append(handler)
            reflector = Reflector(self._api, served, handler,
                                  watch_timeout_seconds=self._watch_timeout,
                                  backoff=Backoff(0.5, self._backoff_max))
            self.reflectors.append(reflector)
            reflector.start()
        if self.reflectors:
            log.info("controller owners: watching %s",
                     ", ".join(str(r.ref) for r in self.reflectors))

    def _served(self, ref: ResourceRef) -> ResourceRef | None:
        """``ref``, or its older version when only that is served, or None."""
        for candidate in (ref, OLDER_VERSIONS.get(ref)):
            if candidate is None:
                continue
            try:
                self._api.list(candidate, self._probe_namespace)
            except KubeError as exc:
                if exc.not_found and NOT_SERVED in exc.message:
                    continue
            return candidate  # served, or an error the reflector reports and retries
        log.info("controller owners: the API server does not serve %s; objects it owns are "
                 "judged on their own", ref)
        return None
