"""Bounded background delivery of notifications, off the admission path.

Admission threads call :meth:`Dispatcher.submit`, which decides which channels
(Kubernetes Events, Slack) an outcome goes to, drops repeats, and appends the
outcome to each channel's bounded queue; it never blocks and never raises.
Each channel has its own queue and worker thread, so a Slack that hangs does
not hold up Events (and the reverse).

Full queue: the *newest* outcome is dropped (and counted as
``magtape_notifications_total{outcome="dropped"}``). Keeping what is already
queued preserves arrival order and needs no second lock; under a burst the
earliest failures, usually the most useful ones, still go out.

De-duplication, counted as ``outcome="deduplicated"``:

- controller-owned Pods do not notify: the Deployment, Job, ... that owns them
  was checked with the same pod spec and already reported (Pods are still
  evaluated and denied; only the notification is skipped);
- the same failures for the same object (kind, namespace, name, decision and
  messages) notify once per ``MAGTAPE_ALERT_DEDUP_SECONDS`` window, so a
  controller retrying a denied object does not flood a channel.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable
from typing import TYPE_CHECKING, Protocol

from magtape.background import TokenBucket, Worker
from magtape.metrics import Channel, Metrics
from magtape.namespaces import NamespaceDirectory
from magtape.settings import DEFAULT_CONTROLLER_IDENTITIES
from magtape.text import NAME_MAX, clean
from magtape.ttlcache import TtlCache

if TYPE_CHECKING:
    from magtape.decision import Outcome

log = logging.getLogger(__name__)

# The de-dup memory (one entry per object and channel) forgets its oldest
# entries beyond this many, so a namespace churning through generated names
# cannot grow it without bound: about 10 000 objects.
DEDUP_MAX_ENTRIES = 20_000
# A full queue logs at most once per this many seconds (with the count).
DROP_LOG_INTERVAL_SECONDS = 60.0
# Notifications per namespace: a burst of this many, then one a second. A
# namespace's legitimate alerts are far fewer (de-duplicated per object, none
# for the Pods a controller creates); a flood of reviews for one namespace,
# forged ones included, cannot crowd out the other namespaces' alerts.
NAMESPACE_BURST = 60
NAMESPACE_PER_SECOND = 1.0
NAMESPACE_BUDGETS_MAX = 10_000


class Sink(Protocol):
    """One channel's I/O, run on that channel's worker thread.

    ``deliver`` counts its own sent/failed/refused outcomes; the dispatcher
    counts dropped and deduplicated ones, and a failed delivery if ``deliver``
    raises anyway.
    """

    @property
    def channel(self) -> Channel: ...

    def deliver(self, outcome: Outcome) -> None: ...

    def close(self, timeout: float) -> None:
        """Finish queued I/O of its own for at most ``timeout`` seconds, then stop."""
        ...


class RateLimitedLog:
    """Counts events and says how many happened when a log line is due (one per interval)."""

    def __init__(self, interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_seconds
        self._clock = clock
        self._count = 0
        self._last = float("-inf")
        self._lock = threading.Lock()

    def tick(self) -> int:
        """Count one event; the number to log now (0: stay quiet)."""
        with self._lock:
            self._count += 1
            now = self._clock()
            if now - self._last < self._interval:
                return 0
            self._last = now
            count, self._count = self._count, 0
            return count


class NamespaceBudget:
    """A token bucket per namespace: ``burst`` at once, refilled at ``per_second``."""

    def __init__(self, burst: float = NAMESPACE_BURST, per_second: float = NAMESPACE_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic,
                 max_namespaces: int = NAMESPACE_BUDGETS_MAX) -> None:
        self._burst, self._rate, self._clock = burst, per_second, clock
        self._max = max_namespaces
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, namespace: str) -> bool:
        """Take one token of ``namespace``'s; False when it has none left."""
        with self._lock:
            bucket = self._buckets.get(namespace)
            if bucket is None:
                if len(self._buckets) >= self._max:
                    self._buckets.clear()  # bounded: only without a cluster to vouch for names
                bucket = self._buckets[namespace] = TokenBucket(self._rate, self._burst,
                                                                self._clock)
            return bucket.try_take()


class RecentAlerts:
    """Keys notified within a time window; bounded, oldest forgotten first."""

    def __init__(self, window_seconds: float, max_entries: int = DEDUP_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._seen: TtlCache[Hashable, bool] = TtlCache(window_seconds, max_entries, clock)

    def check_and_remember(self, key: Hashable) -> bool:
        """True when ``key`` was remembered less than a window ago; else remember it now."""
        return self._window > 0 and self._seen.add_if_absent(key, True)

    def forget(self, key: Hashable) -> None:
        self._seen.discard(key)

    def __len__(self) -> int:
        return len(self._seen)


def dedup_key(outcome: Outcome) -> bytes:
    """What makes two outcomes "the same failures for the same object", as a short digest.

    Hashed so the de-dup memory costs a few dozen bytes per object however
    long the messages are.
    """
    review = outcome.review
    parts = [review.kind, review.namespace, review.name, str(outcome.allowed),
             *outcome.decision.messages]
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()


class _SinkQueue:
    """A bounded FIFO of outcomes for one sink, served by one daemon thread."""

    def __init__(self, sink: Sink, capacity: int, metrics: Metrics) -> None:
        self.sink = sink
        self.channel: Channel = sink.channel
        self._capacity = capacity
        self._metrics = metrics
        self._jobs: deque[Outcome] = deque()
        self._cond = threading.Condition()
        self._closing = False  # deliver what is queued, then end
        self._drops = RateLimitedLog(DROP_LOG_INTERVAL_SECONDS)
        self._worker = Worker(f"magtape-notify-{self.channel}", self._step, wake=self._wake)
        self._worker.start()

    def offer(self, outcome: Outcome) -> bool:
        """Queue ``outcome``; False (and counted as dropped) when full or closed."""
        with self._cond:
            if not self._closing and len(self._jobs) < self._capacity:
                self._jobs.append(outcome)
                self._cond.notify()
                return True
            closing = self._closing
        self._metrics.notification(self.channel, "dropped")
        dropped = self._drops.tick()
        if dropped:
            why = ("MagTape is shutting down" if closing
                   else f"the queue is full ({self._capacity} waiting; "
                        "raise MAGTAPE_NOTIFY_QUEUE_SIZE or check why delivery is slow)")
            log.warning("dropped %d %s notification(s): %s", dropped, self.channel, why)
        return False

    def _step(self) -> bool:
        with self._cond:
            while not self._jobs and not self._closing and not self._worker.stopping:
                self._cond.wait()
            if self._worker.stopping or not self._jobs:  # abandoned, or drained after close
                return False
            outcome = self._jobs.popleft()
        try:
            self.sink.deliver(outcome)
        except Exception:  # counted here; the next outcome goes out without a back-off
            log.exception("%s notification failed unexpectedly", self.channel)
            self._metrics.notification(self.channel, "failed")
        return True

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def begin_close(self) -> None:
        """Take no more outcomes; deliver the queued ones, then end."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        return self._worker.join(timeout)

    def abandon(self) -> int:
        """Stop after the delivery in progress; return how many queued outcomes were discarded."""
        with self._cond:
            abandoned = len(self._jobs)
            self._jobs.clear()
        self._worker.request_stop()
        return abandoned


class Dispatcher:
    """The :class:`~magtape.notify.Notifier` used in a cluster: queues work per channel."""

    def __init__(self, metrics: Metrics, *, events: Sink | None = None,
                 slack: Sink | None = None, slack_passive: bool = False,
                 queue_size: int = 1000, dedup_seconds: float = 600.0,
                 namespaces: NamespaceDirectory | None = None,
                 controllers: Collection[str] = DEFAULT_CONTROLLER_IDENTITIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``namespaces``: when given, only reviews of namespaces that exist and
        opted in notify anyone (see magtape.namespaces); None: no cluster to ask.
        ``controllers``: the user names whose Pods their owners' reports cover."""
        self._metrics = metrics
        self._namespaces = namespaces
        self._controllers = frozenset(controllers)
        self._unverified = RateLimitedLog(DROP_LOG_INTERVAL_SECONDS, clock)
        self._budget = NamespaceBudget(clock=clock)
        self._over_budget = RateLimitedLog(DROP_LOG_INTERVAL_SECONDS, clock)
        self._slack_passive = slack_passive
        self._recent = RecentAlerts(dedup_seconds, clock=clock)
        self._events = _SinkQueue(events, queue_size, metrics) if events is not None else None
        self._slack = _SinkQueue(slack, queue_size, metrics) if slack is not None else None
        self._closed = False

    def submit(self, outcome: Outcome) -> bool:
        try:
            return self._submit(outcome)
        except Exception:  # never let a notification problem reach admission
            log.exception("could not queue notifications; the admission answer is unaffected")
            return False

    def _submit(self, outcome: Outcome) -> bool:
        review = outcome.review
        if review.dry_run or not outcome.violations:
            return False
        lanes = self._lanes_for(outcome)
        if not lanes:
            return False
        if self._namespaces is not None and not self._namespaces.opted_in(review.namespace):
            # Not a namespace the API server sends reviews for: a forged or
            # stale review. Nobody is told, and it costs one counter.
            for lane in lanes:
                self._metrics.notification(lane.channel, "refused")
            count = self._unverified.tick()
            if count:
                log.warning("refused notifications for %d review(s) of namespaces that do not "
                            "exist or did not opt in (last: %s); forged reviews? See "
                            "docs/security.md", count, clean(review.namespace, NAME_MAX))
            return False
        if review.created_by_controller(self._controllers):
            self._deduplicated(lanes)
            return False
        key = dedup_key(outcome)
        fresh = []
        for lane in lanes:
            if self._recent.check_and_remember((lane.channel, key)):
                self._deduplicated([lane])
            else:
                fresh.append(lane)
        if fresh and not self._budget.allow(review.namespace):
            self._over(fresh, key, review.namespace)
            return False
        queued = []
        for lane in fresh:
            if lane.offer(outcome):
                queued.append(lane.channel)
            else:
                # Dropped: nothing went out, so a retry of the same request may notify.
                self._recent.forget((lane.channel, key))
        return "slack" in queued

    def _over(self, lanes: list[_SinkQueue], key: bytes, namespace: str) -> None:
        """Drop (and count) a notification past its namespace's budget; not remembered,
        so the same failures may notify once the namespace is quiet again."""
        for lane in lanes:
            self._recent.forget((lane.channel, key))
            self._metrics.notification(lane.channel, "dropped")
        if count := self._over_budget.tick():
            log.warning("dropped %d notification(s), the last for namespace %s: more than %d "
                        "at once, or %g a second, for one namespace (a flood of reviews, or "
                        "forged ones? See docs/security.md)", count, clean(namespace, NAME_MAX),
                        NAMESPACE_BURST, NAMESPACE_PER_SECOND)

    def _lanes_for(self, outcome: Outcome) -> list[_SinkQueue]:
        """Events for every failure; Slack on denials, and on other failures in passive mode.

        Exception-expiry reminders always go to Slack: they exist to be read there.
        """
        lanes = []
        if self._events is not None:
            lanes.append(self._events)
        if self._slack is not None and (not outcome.allowed or self._slack_passive
                                        or outcome.reminder):
            lanes.append(self._slack)
        return lanes

    def _deduplicated(self, lanes: list[_SinkQueue]) -> None:
        for lane in lanes:
            self._metrics.notification(lane.channel, "deduplicated")

    def close(self, timeout: float) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then discard the rest."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        lanes = [lane for lane in (self._events, self._slack) if lane is not None]
        for lane in lanes:
            lane.begin_close()
        for lane in lanes:
            finished = lane.join(deadline - time.monotonic())
            if finished:
                lane.sink.close(max(0.0, deadline - time.monotonic()))
                continue
            abandoned = lane.abandon()
            if abandoned:
                self._metrics.notification(lane.channel, "dropped", abandoned)
            log.warning("shutdown deadline (%.1fs) reached: discarded %d queued %s "
                        "notification(s)", timeout, abandoned, lane.channel)
