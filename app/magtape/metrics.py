"""Prometheus metrics, registered on an injected registry.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms, small fixed label sets); the ``namespace`` label only takes the
values of namespaces MagTape knows exist, else ``other`` (magtape.namespaces),
so forged reviews cannot grow the series set; the dashboards in
``dashboards/`` query only these names. docs/observability.md maps the original MagTape series
(``magtape_requests_total``, ``magtape_policy_total``) to these.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from magtape import __version__
from magtape.namespaces import FirstSeen, NamespaceLabels
from magtape.policy import Evaluation, LoadReport

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The fixed label values of magtape_notifications_total. Every combination is
# exported from start-up (at 0) so rate() and the dashboards see the series
# before the first notification; the Literal types let mypy catch a typo.
Channel = Literal["event", "slack"]
NotifyOutcome = Literal["sent", "failed", "dropped", "refused", "deduplicated"]
NOTIFY_CHANNELS: tuple[Channel, ...] = get_args(Channel)
NOTIFY_OUTCOMES: tuple[NotifyOutcome, ...] = get_args(NotifyOutcome)
# magtape_policy_engine_errors_total{reason}: magtape.engine.Reason (not
# imported: metrics sit below the engine).
ENGINE_ERROR_REASONS = ("timeout", "crash", "memory", "unavailable", "error")
# Reasons after which the pool killed the worker and started a replacement
# (magtape.engine.pool); the other two leave the workers as they were.
WORKER_REPLACED_REASONS = ("timeout", "crash", "memory")

# Exported names that the generated alerting rules (hack/alerts.py) and
# dashboards query: one spelling, so a rename breaks the generators' --check,
# not a silent alert. Counters are named without ``_total`` (the client adds it).
ADMISSION_REQUESTS = "magtape_admission_requests"
ADMISSION_DURATION = "magtape_admission_duration_seconds"
ENGINE_ERRORS = "magtape_policy_engine_errors"
NOTIFICATIONS = "magtape_notifications"
POLICIES_LOADED = "magtape_policies_loaded"
POLICY_EVALUATIONS = "magtape_policy_evaluations"
POLICY_LOAD_ERRORS = "magtape_policy_load_errors"
CERTIFICATE_EXPIRY = "magtape_certificate_expiry_timestamp_seconds"
BUILD_INFO = "magtape_build"
AUDIT_LAST_COMPLETED = "magtape_audit_last_completed_timestamp_seconds"
AUDIT_LEADER = "magtape_audit_leader"
AUDIT_LEADING_SINCE = "magtape_audit_leading_since_timestamp_seconds"
AUDIT_INTERVAL = "magtape_audit_interval_seconds"
EXCEPTION_EXPIRY = "magtape_exception_expiry_timestamp_seconds"
# At most this many exceptions get an expiry series (the soonest to expire):
# who may create MagTapeExceptions decides their number, not MagTape.
EXCEPTION_EXPIRY_SERIES = 200


class Metrics:
    """Every series MagTape exports; one instance per registry (per app in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 namespaces: NamespaceLabels | None = None) -> None:
        """``namespaces`` decides the ``namespace`` label values (bounded, see
        magtape.namespaces); by default the first 100 seen, then ``other``."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespaces: NamespaceLabels = namespaces if namespaces is not None else FirstSeen()
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}  # see count()
        r = self.registry
        self.requests = Counter(
            ADMISSION_REQUESTS, "Admission requests answered, by decision.",
            ["namespace", "decision", "alert_sent"], registry=r)
        # One request counts a result per policy (30 built-ins): one lock for all of
        # them instead of a Counter child's lock each (docs/performance.md).
        self.policy_evaluations = _Counts(
            POLICY_EVALUATIONS, "Policy evaluations, by policy and result.",
            ("policy", "namespace", "result"))
        r.register(self.policy_evaluations)
        self.would_deny = Counter(
            "magtape_would_deny", "Requests an enforcement override (enforce: warn/off) or a "
            "future denyFrom date let through that the deny level would have denied, by policy.",
            ["policy"], registry=r)
        self.duration = Histogram(
            ADMISSION_DURATION,
            "Time to answer an admission request, from body read to response.",
            buckets=DURATION_BUCKETS, registry=r)
        self.engine_errors = Counter(
            ENGINE_ERRORS, "Requests the policy engine could not evaluate, "
            "by reason (timeout, crash, memory, unavailable, error).", ["reason"], registry=r)
        for reason in ENGINE_ERROR_REASONS:
            self.engine_errors.labels(reason)
        self.notifications = Counter(
            NOTIFICATIONS, "Notifications by channel and outcome.",
            ["channel", "outcome"], registry=r)
        for channel in NOTIFY_CHANNELS:
            for outcome in NOTIFY_OUTCOMES:
                self.notifications.labels(channel, outcome)
        self.policies_loaded = Gauge(
            POLICIES_LOADED, "Policies in the active policy set.", registry=r)
        self.policy_load_errors = Gauge(
            POLICY_LOAD_ERRORS, "Policies left out of the active set by errors.",
            registry=r)
        self.http_responses = Counter(
            "magtape_http_responses", "HTTP responses of the admission listener, by status code.",
            ["code"], registry=r)
        self.certificate_expiry = Gauge(
            CERTIFICATE_EXPIRY,
            "Expiry of the serving certificate (Unix time).", registry=r)
        Info(BUILD_INFO, "MagTape build information.", registry=r).info(
            {"version": __version__})
        # CPU, memory and file descriptors of this process (process_*), on
        # this registry so an app built in a test exports them too.
        with contextlib.suppress(ValueError):  # already there (prometheus_client.REGISTRY)
            ProcessCollector(registry=r)

    def observe_admission(self, namespace: str, allowed: bool, alert_sent: bool,
                          evaluation: Evaluation | None, seconds: float,
                          exempted: Collection[str] = (),
                          inherited: Collection[str] = ()) -> None:
        """Count one answer; a policy whose failures were all exempted counts "exempted",
        one whose failures its owner also has (a controller's object) "inherited"."""
        namespace = self.namespaces.metric_label(namespace)  # bounded: see __init__
        self.count(self.requests, namespace, "allowed" if allowed else "denied",
                   "true" if alert_sent else "false")
        if evaluation is not None:
            # About 30 results a request, most of them passes: a list comprehension that
            # reads ``violations`` directly (not the ``passed`` property) halves it (measured).
            self.policy_evaluations.add([
                (result.policy, namespace,
                 "exempted" if result.policy in exempted
                 else "inherited" if result.policy in inherited else "fail")
                if result.violations else (result.policy, namespace, "pass")
                for result in evaluation.results])
        self.duration.observe(seconds)

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()`` with the child looked up once per label set.

        ``labels()`` validates and locks on every call, several times per
        admission request (docs/performance.md has the cost). The cache holds exactly the
        series the counters hold, which are bounded (see __init__); no series
        is ever removed from these counters, so a cached child stays live.
        """
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def notification(self, channel: Channel, outcome: NotifyOutcome, count: int = 1) -> None:
        """Count ``count`` notifications of one channel with one outcome."""
        self.notifications.labels(channel, outcome).inc(count)

    def observe_load(self, report: LoadReport) -> None:
        self.policies_loaded.set(len(report.policies))
        self.policy_load_errors.set(len({e.policy or e.origin for e in report.errors}))

    def watch_exceptions(self, source: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        """Export ``magtape_exception_expiry_timestamp_seconds`` at scrape time from
        ``source``: ``(namespace, name, expires_at_unix)`` of the exceptions in force."""
        self.registry.register(_ExceptionExpiry(source))


class _Counts(Collector):
    """A counter family whose samples are added many at a time under one lock.

    Exported exactly as a prometheus_client Counter would be (``<name>_total``
    and ``<name>_created`` per label set). Bounded like the Counters: the caller
    passes bounded label values (see Metrics.__init__), and no series is removed.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], list[float]] = {}  # labels: [count, created]

    def add(self, label_sets: Iterable[tuple[str, ...]]) -> None:
        """Count one for each label set (in the order of ``labels``)."""
        now = time.time()
        with self._lock:
            for key in label_sets:
                entry = self._counts.get(key)
                if entry is None:
                    self._counts[key] = [1.0, now]
                else:
                    entry[0] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        with self._lock:
            samples = [(key, count, created) for key, (count, created) in self._counts.items()]
        for key, count, created in samples:
            family.add_metric(list(key), count, created=created)
        yield family


class _ExceptionExpiry(Collector):
    """One series per MagTapeException in force, the soonest EXCEPTION_EXPIRY_SERIES.

    The labels are ``exception_namespace``/``exception_name``, not ``namespace``:
    Prometheus' target label ``namespace`` (MagTape's own) would rename it.
    """

    def __init__(self, source: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(EXCEPTION_EXPIRY, "When each MagTapeException in force "
                                   "expires (Unix time; the soonest 200).",
                                   labels=["exception_namespace", "exception_name"])
        soonest = sorted(self._source(), key=lambda e: (e[2], e[0], e[1]))
        for namespace, name, expires in soonest[:EXCEPTION_EXPIRY_SERIES]:
            family.add_metric([namespace, name], expires)
        yield family


class AuditMetrics:
    """The background audit's series (magtape.audit; docs/audit.md), on the same registry.

    The findings gauges are exported from a snapshot the audit replaces as a
    whole, so a namespace or policy that has nothing left to report drops out
    instead of lingering at its last value. Their label values are bounded by
    the audit (namespaces and policies beyond a cap become ``other``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Gauge("magtape_audit_duration_seconds",
                              "Time the last completed full audit pass took.", registry=registry)
        self.last_completed = Gauge(AUDIT_LAST_COMPLETED,
                                    "When the last full audit pass completed (Unix time).",
                                    registry=registry)
        self.leader = Gauge(AUDIT_LEADER,
                            "1 while this replica holds the audit Lease and writes reports.",
                            registry=registry)
        # With the two below, "no completed pass within 3 intervals" can be
        # told from "just became leader" (the MagTapeAuditStale alert).
        self.leading_since = Gauge(AUDIT_LEADING_SINCE,
                                   "When this replica last took the audit Lease (Unix time; "
                                   "0 while it does not hold it).", registry=registry)
        self.interval = Gauge(AUDIT_INTERVAL, "MAGTAPE_AUDIT_INTERVAL_SECONDS: how often a full "
                              "audit pass is due.", registry=registry)
        self.queue = Gauge("magtape_audit_queue_depth", "Objects waiting to be audited.",
                           registry=registry)
        self.passes = Counter("magtape_audit_passes", "Full audit passes completed.",
                              registry=registry)
        self.evaluations = Counter("magtape_audit_evaluations",
                                   "Objects the audit evaluated (a status-only change is not).",
                                   registry=registry)
        self.report_writes = Counter("magtape_audit_report_writes", "PolicyReports the audit "
                                     "created, replaced or deleted.", registry=registry)
        self.registry = registry
        self._lock = threading.Lock()
        self._violations: dict[tuple[str, str, str], int] = {}
        self._would_deny: dict[tuple[str, str], int] = {}
        registry.register(_AuditFindings(self))

    def set_findings(self, violations: Mapping[tuple[str, str, str], int],
                     would_deny: Mapping[tuple[str, str], int]) -> None:
        """``{(namespace, policy, severity): failures}``, ``{(namespace, level): objects}``."""
        with self._lock:
            self._violations, self._would_deny = dict(violations), dict(would_deny)

    def clear(self) -> None:
        self.set_findings({}, {})
        self.queue.set(0)

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
        with self._lock:
            return dict(self._violations), dict(self._would_deny)


class _AuditFindings(Collector):
    def __init__(self, metrics: AuditMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        violations, would_deny = self._metrics.snapshot()
        v = GaugeMetricFamily("magtape_audit_violations",
                              "Failures found by the audit that admission would report now "
                              "(fail and warn, not exempted), by namespace, policy and severity.",
                              labels=["namespace", "policy", "severity"])
        for labels, count in sorted(violations.items()):
            v.add_metric(list(labels), count)
        yield v
        w = GaugeMetricFamily("magtape_audit_would_deny_objects",
                              "Audited objects admission would deny if MAGTAPE_DENY_LEVEL were "
                              "`level` (exceptions and overrides applied), by namespace.",
                              labels=["namespace", "level"])
        for labels2, count in sorted(would_deny.items()):
            w.add_metric(list(labels2), count)
        yield w
