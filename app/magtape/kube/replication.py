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

from magtape.engine.store import PolicyStore
from magtape.kube.rest import NAMESPACES, ResourceRef
from magtape.settings import KindRef

Obj = dict[str, Any]


def replicated_kinds(extra: Iterable[KindRef]) -> list[ResourceRef]:
    """Namespaces plus the ``MAGTAPE_REPLICATE`` kinds (parsed by Settings.from_env)."""
    refs = [NAMESPACES]
    for kind in extra:
        ref = ResourceRef(kind.group_version, kind.plural)
        if ref not in refs:
            refs.append(ref)
    return refs


class ReplicatedKind:
    """Reflector handler mirroring one kind into ``data.kubernetes.<plural>``."""

    def __init__(self, store: PolicyStore, ref: ResourceRef) -> None:
        self._store = store
        self.ref = ref
        self._lock = threading.Lock()
        # The published layout, kept up to date per event (no rebuild, no sort):
        # at 20,000 namespaces an event costs a shallow copy, not a re-layout.
        self._layout: dict[str, Any] = {}

    def replace(self, objects: list[Obj]) -> None:
        with self._lock:
            layout: dict[str, Any] = {}
            for obj in objects:
                ns, name = _key(obj)
                if ns:
                    layout.setdefault(ns, {})[name] = _trimmed(obj)
                else:
                    layout[name] = _trimmed(obj)
            self._layout = layout
            self._publish()

    def apply(self, event_type: str, obj: Obj) -> None:
        with self._lock:
            ns, name = _key(obj)
            deleted = event_type == "DELETED"
            if ns:
                # A fresh inner dict: the published one is never mutated.
                inner = {k: v for k, v in self._layout.get(ns, {}).items() if k != name}
                if not deleted:
                    inner[name] = _trimmed(obj)
                if inner:
                    self._layout[ns] = inner
                else:
                    self._layout.pop(ns, None)
            elif deleted:
                self._layout.pop(name, None)
            else:
                self._layout[name] = _trimmed(obj)
            self._publish()

    def _publish(self) -> None:
        """Hand the store a shallow copy of the layout (never mutated afterwards)."""
        self._store.set_data(("kubernetes", self.ref.plural), dict(self._layout))


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _trimmed(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj
