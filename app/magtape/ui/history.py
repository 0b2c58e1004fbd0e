"""MagTape's admission Events, kept as a bounded history that outlives their expiry.

The API server deletes Events an hour after they were written (its
``--event-ttl``), so the page keeps what its watch saw: every MagTape Event
(label ``magtape-event=policy-failure``) stays here after the API server
deletes it, up to ``capacity`` entries, oldest dropped first. The page says
since when the history is complete (the first list) and how many were
dropped. A restart of the page starts over from what the API server still
holds. Pure core: fed plain Event documents by a reflector.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from magtape.enforcement.exceptions import parse_time
from magtape.kube.objects import Obj, metadata
from magtape.ui.rows import severity_word

REQUESTED_BY = "magtape.k8s.t-mobile.com/requested-by"  # written by notify.events
_CHECK = re.compile(r"\(([A-Z]{2,}[0-9]{3,})\)")
_SEVERITY = re.compile(r"\[FAIL\] (HIGH|MED|LOW)\b")


@dataclass(frozen=True)
class Admission:
    """One request MagTape denied, or admitted with warnings."""

    uid: str
    at: datetime
    denied: bool
    namespace: str
    kind: str
    name: str
    requested_by: str
    checks: tuple[str, ...]
    severities: tuple[str, ...]  # high, medium, low among its failures
    note: str

    @property
    def label(self) -> str:
        who = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {who}"


def parse_event(obj: Mapping[str, Any]) -> Admission | None:
    meta = metadata(obj)
    uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
    at = (parse_time(obj.get("eventTime")) or parse_time(meta.get("creationTimestamp"))
          or datetime.now(UTC))
    regarding = obj.get("regarding") or {}
    note = str(obj.get("note") or "")
    action = str(obj.get("action") or "")
    if not note and not action:
        return None
    checks = tuple(dict.fromkeys(_CHECK.findall(note)))
    severities = tuple(dict.fromkeys(severity_word(s) for s in _SEVERITY.findall(note)))
    return Admission(uid, at, action == "Denied", str(regarding.get("namespace") or ""),
                     str(regarding.get("kind") or ""), str(regarding.get("name") or ""),
                     str((meta.get("annotations") or {}).get(REQUESTED_BY) or ""),
                     checks, severities, note)


class AdmissionHistory:
    """Reflector handler; newest first on read. Deleted Events are kept (they expired)."""

    def __init__(self, capacity: int = 5000, clock: Callable[[], datetime] | None = None
                 ) -> None:
        self.capacity = capacity
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._by_uid: OrderedDict[str, Admission] = OrderedDict()  # oldest first
        self.since: datetime | None = None  # complete from here (the first list)
        self.dropped = 0
        self.version = 0
        self._newest_first: tuple[Admission, ...] = ()
        self._sorted_version = -1

    def replace(self, objects: list[Obj]) -> None:
        # A list comes in name order, not time order: kept oldest first, the
        # newest are what stays when there are more than the capacity.
        found = sorted((a for a in map(parse_event, objects) if a is not None),
                       key=lambda a: a.at)
        with self._lock:
            if self.since is None:
                self.since = self._clock()
            for admission in found:
                self._put(admission)

    def apply(self, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":  # expired on the API server: kept here
            return
        found = parse_event(obj)
        if found is None:
            return
        with self._lock:
            self._put(found)

    def _put(self, found: Admission) -> None:
        if (len(self._by_uid) >= self.capacity and found.uid not in self._by_uid
                and found.at < next(iter(self._by_uid.values())).at):
            self.dropped += 1  # older than all that is kept: it would be dropped first
            return
        self._by_uid[found.uid] = found
        self.version += 1
        while len(self._by_uid) > self.capacity:
            self._by_uid.popitem(last=False)
            self.dropped += 1

    def newest_first(self) -> tuple[Admission, ...]:
        with self._lock:
            if self._sorted_version != self.version:
                self._newest_first = tuple(sorted(self._by_uid.values(),
                                                  key=lambda a: a.at, reverse=True))
                self._sorted_version = self.version
            return self._newest_first
