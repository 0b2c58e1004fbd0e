"""Stores the namespace reports, writing only what changed.

The writer remembers each report as last read or written (with its
resourceVersion). A report whose content is unchanged costs nothing; a
changed one is replaced conditionally (a 409 re-reads it and the caller
tries again on its next flush); a namespace with nothing left to report
loses its report. Only reports labelled as MagTape's are touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from magtape.audit.report import API_VERSION, MANAGED_BY, PLURAL, REPORT_NAME, content, with_content
from magtape.kube.objects import Obj, metadata
from magtape.kube.rest import KubeError, RawApi, ResourceRef

log = logging.getLogger(__name__)

POLICY_REPORTS = ResourceRef(API_VERSION, PLURAL)
SELECTOR = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"



class ReportWriter:
    """Creates, replaces and deletes MagTape's PolicyReports; used by one thread."""

    def __init__(self, api: RawApi, on_write: Callable[[], None] = lambda: None) -> None:
        self._api = api
        self._known: dict[str, Obj] = {}  # namespace -> the report as stored
        self._on_write = on_write  # each create, replace or delete sent (a metric)

    def load_existing(self) -> set[str]:
        """Read the reports already stored (a previous leader's); their namespaces."""
        doc = self._api.list(POLICY_REPORTS, None, SELECTOR)
        for item in doc.get("items") or []:
            meta = metadata(item)
            if meta.get("name") == REPORT_NAME:
                self._known[str(meta.get("namespace") or "")] = item
        return set(self._known)

    @property
    def namespaces(self) -> set[str]:
        return set(self._known)

    def sync(self, namespace: str, desired: Obj | None) -> bool:
        """Make the stored report ``desired`` (None: no report); False to try again later."""
        try:
            if desired is None:
                return self._delete(namespace)
            return self._put(namespace, desired)
        except KubeError as exc:
            if exc.conflict:  # changed under us: read it again, retry on the next flush
                self._refresh(namespace)
                return False
            if exc.status in (403, 404) and desired is not None and "namespaces" in exc.message:
                log.info("audit: cannot write the report of %s (%s)", namespace, exc)
                return True  # the namespace is going away
            log.warning("audit: writing the PolicyReport of %s failed: %s; will retry",
                        namespace, exc)
            return False

    def _put(self, namespace: str, desired: Obj) -> bool:
        stored = self._known.get(namespace)
        if stored is not None and content(stored) == content(desired):
            return True
        if stored is None:
            try:
                self._known[namespace] = self._api.create(POLICY_REPORTS, desired, namespace)
                self._on_write()
                return True
            except KubeError as exc:
                if not exc.conflict:
                    raise
                self._refresh(namespace)  # it exists after all (another writer, a restart)
                stored = self._known.get(namespace)
                if stored is None or content(stored) == content(desired):
                    return stored is not None
        self._known[namespace] = self._api.replace(
            POLICY_REPORTS, REPORT_NAME, with_content(stored, desired), namespace)
        self._on_write()
        return True

    def _delete(self, namespace: str) -> bool:
        if namespace not in self._known:
            return True
        try:
            self._api.delete(POLICY_REPORTS, REPORT_NAME, namespace)
        except KubeError as exc:
            if not exc.not_found:
                raise
        self._known.pop(namespace, None)
        self._on_write()
        return True

    def _refresh(self, namespace: str) -> None:
        try:
            self._known[namespace] = self._api.get(POLICY_REPORTS, REPORT_NAME, namespace)
        except KubeError as exc:
            if exc.not_found:
                self._known.pop(namespace, None)
            else:
                log.warning("audit: reading the PolicyReport of %s failed: %s", namespace, exc)
