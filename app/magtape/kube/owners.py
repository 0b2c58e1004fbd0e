"""The owners controllers derive objects from, found in the process' shared watches.

Admission asks "does the owner this ownerReference names exist, and what is
its spec?" for every object a controller creates that has a failure that
would deny (magtape.enforcement.inheritance). Asking the API server there
would make admission wait on it, and fail when it fails; instead each owner
resource (``MAGTAPE_CONTROLLER_OWNER_KINDS``) is followed by the process'
shared informer for it (one list/watch per resource, the audit's too), and a
lookup reads the informer's current objects. Readiness waits for every
resource's first list (:attr:`OwnerIndex.synced`, magtape.wiring); for an
owner created a moment ago and not yet seen, the lookup finds nothing and the
object is judged on its own (its controller retries, and the retry finds
it); while the API server is unreachable the last known owners stay.

A resource the API server does not serve at the configured version is
followed at the known older one (``batch/v1/cronjobs`` is
``batch/v1beta1/cronjobs`` before Kubernetes 1.21), else left out with one
log line. Finding that out takes API calls, so it runs on a thread of its
own: start-up never waits for the API server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from magtape.kube.informers import Informer, Informers
from magtape.kube.objects import Obj
from magtape.kube.rest import KubeError, ResourceRef
from magtape.settings import KindRef

log = logging.getLogger(__name__)

# Older versions a resource was served at, tried when the configured one is not served.
OLDER_VERSIONS = {ResourceRef("batch/v1", "cronjobs"): ResourceRef("batch/v1beta1", "cronjobs")}


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class _Holds:
    """A handler that only keeps its informer running (the informer keeps the objects);
    the audit releasing its own handler then does not stop the owners' watch."""

    def replace(self, objects: list[Obj]) -> None:
        return None

    def apply(self, event_type: str, obj: Obj) -> None:
        return None


class OwnerIndex:
    """Owners by group, kind, namespace and name; an ``OwnerLookup`` that never blocks."""

    def __init__(self, informers: Informers, kinds: Iterable[KindRef], *,
                 probe_namespace: str) -> None:
        self._informers = informers
        self._refs = [ResourceRef(k.group_version, k.plural) for k in kinds]
        self._probe_namespace = probe_namespace
        self._handler = _Holds()
        self._found: list[tuple[str, Informer]] = []  # (group, informer), appended only
        self._starter: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------ lookups
    def owner(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        group, kind, name = (_group(str(ref.get("apiVersion", ""))), str(ref.get("kind", "")),
                             str(ref.get("name", "")))
        for found_group, informer in list(self._found):
            if found_group != group:
                continue
            obj = informer.get(namespace, name)
            if obj is not None and obj.get("kind") == kind:
                return {k: v for k, v in obj.items() if k != "status"}
        return None

    @property
    def synced(self) -> bool:
        return bool(self._found) and all(i.synced.is_set() for _, i in list(self._found))

    @property
    def resources(self) -> list[str]:
        return [str(i.selection.ref) for _, i in list(self._found)]

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Find the served versions and follow them, off the caller's thread."""
        self._starter = threading.Thread(target=self._follow, daemon=True,
                                         name="magtape-owners-start")
        self._starter.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._starter is not None:
            self._starter.join(timeout)
        for _, informer in list(self._found):
            self._informers.release(informer, self._handler)

    def _follow(self) -> None:
        for ref in self._refs:
            served = self._served(ref)
            if served is None or self._stopped.is_set():
                continue
            informer = self._informers.subscribe(served, self._handler)
            self._found.append((_group(served.group_version), informer))
        if self._found:
            log.info("controller owners: following %s", ", ".join(self.resources))

    def _served(self, ref: ResourceRef) -> ResourceRef | None:
        """``ref``, or its older version when only that is served, or None."""
        for candidate in (ref, OLDER_VERSIONS.get(ref)):
            if candidate is None:
                continue
            try:
                self._informers.api.list(candidate, self._probe_namespace)
            except KubeError as exc:
                if exc.not_served:
                    continue
            return candidate  # served, or an error the informer reports and retries
        log.info("controller owners: the API server does not serve %s; objects it owns are "
                 "judged on their own", ref)
        return None
