"""Cluster objects replicated into the policies' ``data``, in kube-mgmt's layout.

Policies read cluster state as ``data.kubernetes.<plural>``: cluster-scoped
kinds as ``data.kubernetes.namespaces[<name>]``, namespaced kinds as
``data.kubernetes.<plural>[<namespace>][<name>]`` (MT2002 reads namespace
annotations this way). Namespaces are always replicated; ``MAGTAPE_REPLICATE``
adds kinds such as ``v1/services`` or ``apps/v1/deployments``. Each section
replaces whatever a data file put at the same path. ``metadata.managedFields``
is dropped: it is bookkeeping no policy needs, and it is often the bulk of an
object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from magtape.kube.rest import NAMESPACES, ResourceRef
from magtape.kube.store import PolicyStore
from magtape.settings import ConfigError

Obj = dict[str, Any]


def replicated_kinds(extra: Iterable[str]) -> list[ResourceRef]:
    """Namespaces plus the ``MAGTAPE_REPLICATE`` entries; ConfigError on a bad entry."""
    refs = [NAMESPACES]
    for text in extra:
        try:
            ref = ResourceRef.parse(text)
        except ValueError as exc:
            raise ConfigError(f"MAGTAPE_REPLICATE: {exc}") from None
        if ref.plural == "secrets":
            raise ConfigError("MAGTAPE_REPLICATE: replicating Secrets would put credentials "
                              "into policy data; remove v1/secrets")
        if ref not in refs:
            refs.append(ref)
    return refs


class ReplicatedKind:
    """Reflector handler mirroring one kind into ``data.kubernetes.<plural>``."""

    def __init__(self, store: PolicyStore, ref: ResourceRef) -> None:
        self._store = store
        self.ref = ref
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], Obj] = {}

    def replace(self, objects: list[Obj]) -> None:
        with self._lock:
            self._objects = {_key(o): _trimmed(o) for o in objects}
            self._publish()

    def apply(self, event_type: str, obj: Obj) -> None:
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(_key(obj), None)
            else:
                self._objects[_key(obj)] = _trimmed(obj)
            self._publish()

    def _publish(self) -> None:
        """Hand the store a fresh layout (never mutated afterwards)."""
        layout: dict[str, Any] = {}
        for (ns, name), obj in sorted(self._objects.items()):
            if ns:
                layout.setdefault(ns, {})[name] = obj
            else:
                layout[name] = obj
        self._store.set_data(("kubernetes", self.ref.plural), layout)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _trimmed(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj
