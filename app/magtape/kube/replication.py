"""Cluster objects replicated into the policies' ``data``, in kube-mgmt's layout.

Policies read cluster state as ``data.kubernetes.<plural>``: cluster-scoped
kinds as ``data.kubernetes.namespaces[<name>]``, namespaced kinds as
``data.kubernetes.<plural>[<namespace>][<name>]`` (MT2002 reads namespace
annotations this way). Namespaces are always replicated; ``MAGTAPE_REPLICATE``
adds kinds such as ``v1/services`` or ``apps/v1/deployments``. Each section
replaces whatever a data file put at the same path. ``metadata.managedFields``
is dropped: it is bookkeeping no policy needs, and it is often the bulk of an
object. :func:`layout` is the one definition of that layout, for the
webhook's live replication and ``magtape audit``'s one-off reads alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from magtape.engine.store import PolicyStore
from magtape.kube.objects import Obj, key_of, without_managed_fields
from magtape.kube.rest import NAMESPACES, ResourceRef
from magtape.review import MAX_NESTING_DEPTH, nested_deeper_than
from magtape.settings import KindRef

log = logging.getLogger(__name__)


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
            self._layout = layout(objects)
            self._publish()

    def apply(self, event_type: str, obj: Obj) -> None:
        with self._lock:
            ns, name = key_of(obj)
            deleted = event_type == "DELETED" or not replicable(obj)
            if ns:
                # A fresh inner dict: the published one is never mutated.
                inner = {k: v for k, v in self._layout.get(ns, {}).items() if k != name}
                if not deleted:
                    inner[name] = without_managed_fields(obj)
                if inner:
                    self._layout[ns] = inner
                else:
                    self._layout.pop(ns, None)
            elif deleted:
                self._layout.pop(name, None)
            else:
                self._layout[name] = without_managed_fields(obj)
            self._publish()

    def _publish(self) -> None:
        """Hand the store a shallow copy of the layout (never mutated afterwards)."""
        self._store.set_data(("kubernetes", self.ref.plural), dict(self._layout))


def layout(objects: Iterable[Obj]) -> dict[str, Any]:
    """kube-mgmt's layout of one kind: ``{name: obj}`` for cluster-scoped objects,
    ``{namespace: {name: obj}}`` for namespaced ones, without managedFields."""
    out: dict[str, Any] = {}
    for obj in objects:
        if not replicable(obj):
            continue
        ns, name = key_of(obj)
        if ns:
            out.setdefault(ns, {})[name] = without_managed_fields(obj)
        else:
            out[name] = without_managed_fields(obj)
    return out


def replicable(obj: Obj) -> bool:
    """Whether ``obj`` can go into the policies' data. The engine refuses data
    nested deeper than it recurses; one such object (a custom resource with
    free-form fields, say) would make every engine worker refuse the cluster
    data, so it is left out, with a warning, and the others stay."""
    if not nested_deeper_than(obj, MAX_NESTING_DEPTH):
        return True
    ns, name = key_of(obj)
    log.warning("%s %s is nested deeper than %d levels: left out of the policies' data "
                "(data.kubernetes)", obj.get("kind", "object"), f"{ns}/{name}" if ns else name,
                MAX_NESTING_DEPTH)
    return False
