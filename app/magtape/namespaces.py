"""Which namespaces exist and opted in: what a review's namespace is checked against.

Why it exists: the API server is not the only possible caller of the webhook
(docs/security.md), so the namespace named in a review is a claim. Anything
MagTape keeps or sends per namespace is limited to namespaces it has seen in
the cluster itself (the Namespace watch it already runs for policy data):

- metric label values: a known namespace, else the fixed value ``other``, so a
  flood of made-up namespaces cannot grow the series set;
- Events and Slack alerts (default and tenant targets): only for namespaces
  that exist and opted in with the webhook's label, and are not excluded,
  exactly the set the webhook's namespaceSelector sends to MagTape.

Without a cluster (local runs) :class:`FirstSeen` bounds the label values
instead. Nothing here imports Kubernetes code: the directory is a reflector
handler fed with plain Namespace documents.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Protocol

from magtape.kube.objects import Obj, metadata

OTHER = "other"
# The label of base/webhook.yaml's namespaceSelector, and the namespaces it
# excludes whatever their labels.
OPT_IN_LABEL = ("k8s.t-mobile.com/magtape", "enabled")
EXCLUDED = frozenset({"kube-system", "kube-node-lease", "kube-public", "magtape-system"})
# Local runs: at most this many distinct namespace label values.
FIRST_SEEN_MAX = 100

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def opted_in(name: str, labels: Mapping[str, str] | None) -> bool:
    """Whether the shipped webhook sends this namespace's requests to MagTape."""
    key, value = OPT_IN_LABEL
    return (labels or {}).get(key) == value and name not in EXCLUDED


class NamespaceLabels(Protocol):
    def metric_label(self, namespace: str) -> str:
        """The ``namespace`` label value to record for a review's namespace."""
        ...


class NamespaceDirectory:
    """The cluster's namespaces, kept current by the Namespace reflector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._opted_in: set[str] = set()

    # -- reflector handler ------------------------------------------------------
    def replace(self, objects: list[Obj]) -> None:
        known, opted = set(), set()
        for obj in objects:
            name, enabled = self._parse(obj)
            if name:
                known.add(name)
                if enabled:
                    opted.add(name)
        with self._lock:
            self._known, self._opted_in = known, opted

    def apply(self, event_type: str, obj: Obj) -> None:
        name, enabled = self._parse(obj)
        if not name:
            return
        with self._lock:
            if event_type == "DELETED":
                self._known.discard(name)
                self._opted_in.discard(name)
                return
            self._known.add(name)
            if enabled:
                self._opted_in.add(name)
            else:
                self._opted_in.discard(name)

    def _parse(self, obj: Obj) -> tuple[str, bool]:
        meta = metadata(obj)
        name = meta.get("name")
        if not isinstance(name, str):
            return "", False
        return name, opted_in(name, meta.get("labels"))

    # -- queries ----------------------------------------------------------------
    def exists(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._known

    def opted_in(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._opted_in

    def metric_label(self, namespace: str) -> str:
        return namespace if namespace and self.exists(namespace) else OTHER


class FirstSeen:
    """Label values without a cluster: the first ``limit`` namespaces, then ``other``."""

    def __init__(self, limit: int = FIRST_SEEN_MAX) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def metric_label(self, namespace: str) -> str:
        if not _DNS_LABEL.fullmatch(namespace):  # cannot be a namespace's name
            return OTHER
        with self._lock:
            if namespace in self._seen:
                return namespace
            if len(self._seen) < self._limit:
                self._seen.add(namespace)
                return namespace
        return OTHER
