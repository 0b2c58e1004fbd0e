"""Slack delivery: one alert to each of its targets, isolated per target, safely.

Targets and URL policy live in :mod:`magtape.notify.slack_targets`, the
payload in :mod:`magtape.notify.slack_payload`; this module posts. Each target
(the default webhook, each tenant's webhook) has its own bounded FIFO, at most
one post in flight. The default webhook has a worker of its own; the tenants'
share a small pool whose workers take turns between targets, one post each: a
tenant URL that black-holes connections or keeps answering 429 holds one
worker for one post, is then skipped for a minute, and fills its own queue
(then its alerts are dropped and counted), while every other target's alerts
keep going out.

A webhook URL is a credential: it never appears in a log line. Our own
messages name the target by origin and host only, exceptions are logged by
type, and urllib3's debug/retry lines are redacted while a post is in flight
(see :class:`RedactWebhookUrls`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from magtape.background import Worker
from magtape.metrics import Channel, Metrics
from magtape.notify.dispatcher import RateLimitedLog
from magtape.notify.slack_payload import build_payload
from magtape.notify.slack_targets import Target, TargetResolver, TenantWebhooks
from magtape.remediation import remedies_for
from magtape.settings import Settings
from magtape.text import NAME_MAX, clean
from magtape.ttlcache import TtlCache

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

    from magtape.decision import Outcome

log = logging.getLogger(__name__)

# Retries on 429/5xx: a bounded number, exponential back-off, and a server's
# Retry-After honoured up to a cap, so one alert holds a worker for seconds,
# not for as long as a server asks.
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_TOTAL = 3
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX_SECONDS = 4.0
RETRY_AFTER_MAX_SECONDS = 10.0
# Per-target isolation (docs/notifications.md): posts in flight at once (one
# per target at most), alerts waiting per target, targets with alerts waiting.
WORKERS = 4
PER_TARGET_QUEUE = 50
MAX_PENDING_TARGETS = 256
# A target whose connection failed or timed out, or that still answered 429 or
# 5xx after the retries, is skipped (its alerts counted as failed at once) for
# this long, so it costs a worker one failed post a minute.
COOLDOWN_SECONDS = 60.0
# Repeated warnings about one condition: one line per minute, with a count.
LOG_INTERVAL_SECONDS = 60.0


class _BoundedRetry(Retry):
    """urllib3's Retry with the server's Retry-After capped."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, RETRY_AFTER_MAX_SECONDS)


def retry_policy(backoff_factor: float = RETRY_BACKOFF_FACTOR) -> Retry:
    return _BoundedRetry(
        total=RETRY_TOTAL,
        connect=2,  # nothing was sent: safe to try again
        read=0,  # the post may have arrived: do not risk a duplicate alert
        other=0,
        redirect=0,
        status=RETRY_TOTAL,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"POST"}),
        backoff_factor=backoff_factor,
        backoff_max=RETRY_BACKOFF_MAX_SECONDS,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last answer so its status is logged
    )


def describe_error(exc: BaseException) -> str:
    """Exception type names, outer and root cause: str(exc) would name the URL."""
    names = [type(exc).__name__]
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        names.append(type(cause.reason).__name__)
    return " / ".join(names)


_in_flight = threading.local()


@contextlib.contextmanager
def _redacting(url: str) -> Iterator[None]:
    """While posting to ``url`` on this thread, scrub it from urllib3's log records."""
    parts = urlsplit(url)
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    # Longest first, and as requests re-quotes them, so no fragment survives.
    variants = {url, requote_uri(url), path, requote_uri(path), parts.path}
    _in_flight.secrets = tuple(sorted((v for v in variants if len(v) > 1), key=len,
                                      reverse=True))
    try:
        yield
    finally:
        _in_flight.secrets = ()


class RedactWebhookUrls(logging.Filter):
    """Removes the webhook URL being posted from urllib3's own log records.

    urllib3 logs request paths (at DEBUG, and at WARNING when it retries a
    broken connection); for a Slack webhook the path *is* the secret.
    """

    LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
               "urllib3.util.retry")

    def filter(self, record: logging.LogRecord) -> bool:
        secrets: tuple[str, ...] = getattr(_in_flight, "secrets", ())
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: say nothing rather than leak
                message = f"{record.name}: (message withheld during a Slack post)"
            for secret in secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, None
        return True

    @classmethod
    def install(cls) -> None:
        for name in cls.LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())


@dataclass(frozen=True)
class _Post:
    target: Target
    payload: dict[str, Any]
    what: str  # "Deployment ns/name", for log lines


class PerTargetQueues:
    """One FIFO per target, at most one job of a target in flight, ``workers`` in all."""

    def __init__(self, run: Callable[[_Post], None], workers: int = WORKERS,
                 per_target: int = PER_TARGET_QUEUE,
                 max_targets: int = MAX_PENDING_TARGETS) -> None:
        self._run = run
        self._per_target = per_target
        self._max_targets = max_targets
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # A target's deque exists while it has jobs queued or one in flight.
        self._pending: dict[str, deque[_Post]] = {}
        self._in_flight: set[str] = set()
        self._closed = False
        self._ready: queue.Queue[str | None] = queue.Queue()
        # A stop wakes one worker blocked on the ready queue (each takes one None).
        self._workers = [Worker(f"magtape-slack-{i}", self._step,
                                wake=lambda: self._ready.put(None)) for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def offer(self, key: str, job: _Post) -> bool:
        """Queue ``job`` for target ``key``; False when closed or its queue or the table is full."""
        with self._lock:
            if self._closed:
                return False
            jobs = self._pending.get(key)
            if jobs is None:
                if len(self._pending) >= self._max_targets:
                    return False
                jobs = self._pending[key] = deque()
                schedule = True
            else:
                schedule = False  # a worker has it, or it is already in the ready queue
            if len(jobs) >= self._per_target:
                return False
            jobs.append(job)
        if schedule:
            self._ready.put(key)
        return True

    def _step(self) -> bool:
        """Post one job of the next ready target, then put the target at the back of
        the line when it has more: targets take turns, so a slow one delays each other
        target by one post at most; False on the stop sentinel."""
        if (key := self._ready.get()) is None:
            return False
        with self._lock:
            jobs = self._pending[key]
            job = jobs[0] if jobs and not self._closed else None
            if job is None:
                del self._pending[key]
                self._idle.notify_all()
                return True
            self._in_flight.add(key)
        try:
            self._run(job)
        except Exception:  # the target's next post goes out as usual
            log.exception("Slack alert failed unexpectedly")
        with self._lock:
            jobs.popleft()
            self._in_flight.discard(key)
            more = bool(jobs) and not self._closed
            if not more:
                del self._pending[key]
                self._idle.notify_all()
        if more:
            self._ready.put(key)
        return True

    def close(self, timeout: float) -> int:
        """Let queued jobs run for at most ``timeout`` seconds; return how many were left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending and self._idle.wait(max(0.0, deadline - time.monotonic())):
                pass
            self._closed = True  # workers finish the post in hand and take no other
            left = sum(len(jobs) - (key in self._in_flight)
                       for key, jobs in self._pending.items())
        for worker in self._workers:
            worker.request_stop()
        return left


class SlackSender:
    """The Slack :class:`~magtape.notify.dispatcher.Sink`: resolves targets, queues posts."""

    channel: Channel = "slack"

    def __init__(self, settings: Settings, metrics: Metrics,
                 tenants: TenantWebhooks | None = None, verify: bool | str = True,
                 retry: Retry | None = None, workers: int = WORKERS,
                 per_target: int = PER_TARGET_QUEUE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``verify``: True (system CAs, or ``REQUESTS_CA_BUNDLE``), or a CA bundle path."""
        self._settings = settings
        self._remedies = remedies_for(settings)
        self._cooling: TtlCache[str, bool] = TtlCache(COOLDOWN_SECONDS, MAX_PENDING_TARGETS,
                                                      clock)
        self._dropped = RateLimitedLog(LOG_INTERVAL_SECONDS, clock)
        self._skipped = RateLimitedLog(LOG_INTERVAL_SECONDS, clock)
        self._metrics = metrics
        self._verify = verify
        self._resolver = TargetResolver(
            settings.slack.default_url, tenants, settings.slack.allowed_host_set,
            settings.slack.allowed_port_set, settings.slack.url_base,
            on_refused=lambda: metrics.notification("slack", "refused"))
        timeout = settings.slack.timeout_seconds
        self._timeout = (timeout, timeout)  # (connect, read) per attempt
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry or retry_policy(), pool_maxsize=workers)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        RedactWebhookUrls.install()
        # The default webhook (the administrators') has a worker of its own, so
        # tenants' slow or refusing webhooks can never delay it; tenants share the rest.
        self._default_queue = PerTargetQueues(self._post, 1, per_target, max_targets=1)
        self._queues = PerTargetQueues(self._post, max(1, workers - 1), per_target)

    def targets(self, namespace: str) -> list[Target]:
        """Where an alert for ``namespace`` goes."""
        return self._resolver.targets(namespace)

    def deliver(self, outcome: Outcome) -> None:
        review = outcome.review
        what = (f"{clean(review.kind, NAME_MAX)} {clean(review.namespace, NAME_MAX)}/"
                f"{clean(review.name, NAME_MAX)}")
        for target in self.targets(review.namespace):
            payload = build_payload(outcome, cluster=self._settings.identity.cluster,
                                    username=self._settings.slack.user,
                                    icon=self._settings.slack.icon, customer=target.customer,
                                    remedies=self._remedies)
            queues = self._queues if target.customer else self._default_queue
            if not queues.offer(target.origin, _Post(target, payload, what)):
                self._metrics.notification("slack", "dropped")
                if count := self._dropped.tick():
                    log.warning("dropped %d Slack alert(s), the last for %s to %s: its queue "
                                "is full (%d waiting); the target is slow or unreachable",
                                count, what, target.describe(), PER_TARGET_QUEUE)

    def _post(self, job: _Post) -> None:
        target, what = job.target, job.what
        if self._cooling.lookup(target.origin)[0]:
            self._metrics.notification("slack", "failed")
            if count := self._skipped.tick():
                log.warning("skipped %d Slack alert(s), the last for %s to %s: it was "
                            "unreachable less than %ds ago", count, what, target.describe(),
                            COOLDOWN_SECONDS)
            return
        try:
            with _redacting(target.url):
                response = self._session.post(target.url, json=job.payload,
                                              timeout=self._timeout, verify=self._verify,
                                              allow_redirects=False)
                response.close()
        except requests.RequestException as exc:
            self._metrics.notification("slack", "failed")
            if isinstance(exc, requests.ConnectionError | requests.Timeout):
                self._cooling.put(target.origin, True)
            log.warning("Slack alert for %s to %s failed: %s", what, target.describe(),
                        describe_error(exc))
            return
        if 200 <= response.status_code < 300:
            self._metrics.notification("slack", "sent")
            log.debug("Slack alert for %s sent to %s", what, target.describe())
        else:
            self._metrics.notification("slack", "failed")
            if response.status_code in RETRY_STATUS:  # still refused after every retry
                self._cooling.put(target.origin, True)
            log.warning("Slack alert for %s to %s failed: HTTP %d after retries", what,
                        target.describe(), response.status_code)

    def close(self, timeout: float = 5.0) -> None:
        """Post what is queued for at most ``timeout`` seconds; count the rest as dropped."""
        deadline = time.monotonic() + timeout
        left = self._default_queue.close(timeout)
        left += self._queues.close(max(0.0, deadline - time.monotonic()))
        if left:
            self._metrics.notification("slack", "dropped", left)
            log.warning("shutdown: discarded %d queued Slack alert(s)", left)
        self._session.close()
