"""One bounded, time-limited cache, for everything MagTape remembers for a while.

Why it exists: the notification de-duplication ("alerted about this object
less than ten minutes ago") and the tenant Slack URLs ("read this namespace's
Secret less than a minute ago") are the same structure: entries that expire
after a time-to-live, in a memory that never holds more than a fixed number
of entries (the oldest go first), safe to use from several threads. Keys come
from what clients send, so the bound matters as much as the expiry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live ``ttl_seconds`` from when they were stored; at most ``max_entries``."""

    def __init__(self, ttl_seconds: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when ``key`` was stored less than a TTL ago, else (False, None)."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            return (True, entry[1]) if entry is not None else (False, None)

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def add_if_absent(self, key: K, value: V) -> bool:
        """Store ``key`` unless present (and live); True when it was already there."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key in self._entries:
                return True
            self._entries[key] = (now, value)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return False

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _expire(self, now: float) -> None:
        # Entries are kept in the order they were stored, so the expired ones
        # are at the front.
        while self._entries:
            oldest_key, (stored, _) = next(iter(self._entries.items()))
            if now - stored < self._ttl:
                break
            del self._entries[oldest_key]
