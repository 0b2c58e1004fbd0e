"""Prometheus metrics, registered on an injected registry.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms, small fixed label sets); the dashboards in ``dashboards/`` query
only these names. docs/observability.md maps the original MagTape series
(``magtape_requests_total``, ``magtape_policy_total``) to these.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.process_collector import ProcessCollector

from magtape import __version__
from magtape.policy import Evaluation, LoadReport

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The fixed label values of magtape_notifications_total. Every combination is
# exported from start-up (at 0) so rate() and the dashboards see the series
# before the first notification; the Literal types let mypy catch a typo.
Channel = Literal["event", "slack"]
NotifyOutcome = Literal["sent", "failed", "dropped", "refused", "deduplicated"]
NOTIFY_CHANNELS: tuple[Channel, ...] = get_args(Channel)
NOTIFY_OUTCOMES: tuple[NotifyOutcome, ...] = get_args(NotifyOutcome)


class Metrics:
    """Every series MagTape exports; one instance per registry (per app in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "magtape_admission_requests", "Admission requests answered, by decision.",
            ["namespace", "decision", "alert_sent"], registry=r)
        self.policy_evaluations = Counter(
            "magtape_policy_evaluations", "Policy evaluations, by policy and result.",
            ["policy", "namespace", "result"], registry=r)
        self.duration = Histogram(
            "magtape_admission_duration_seconds",
            "Time to answer an admission request, from body read to response.",
            buckets=DURATION_BUCKETS, registry=r)
        self.engine_errors = Counter(
            "magtape_policy_engine_errors", "Requests the policy engine could not evaluate.",
            registry=r)
        self.notifications = Counter(
            "magtape_notifications", "Notifications by channel and outcome.",
            ["channel", "outcome"], registry=r)
        for channel in NOTIFY_CHANNELS:
            for outcome in NOTIFY_OUTCOMES:
                self.notifications.labels(channel, outcome)
        self.policies_loaded = Gauge(
            "magtape_policies_loaded", "Policies in the active policy set.", registry=r)
        self.policy_load_errors = Gauge(
            "magtape_policy_load_errors", "Policies left out of the active set by errors.",
            registry=r)
        self.http_responses = Counter(
            "magtape_http_responses", "HTTP responses of the admission listener, by status code.",
            ["code"], registry=r)
        self.certificate_expiry = Gauge(
            "magtape_certificate_expiry_timestamp_seconds",
            "Expiry of the serving certificate (Unix time).", registry=r)
        Info("magtape_build", "MagTape build information.", registry=r).info(
            {"version": __version__})
        # CPU, memory and file descriptors of this process (process_*), on
        # this registry so an app built in a test exports them too.
        with contextlib.suppress(ValueError):  # already there (prometheus_client.REGISTRY)
            ProcessCollector(registry=r)

    def observe_admission(self, namespace: str, allowed: bool, alert_sent: bool,
                          evaluation: Evaluation | None, seconds: float) -> None:
        self.requests.labels(namespace, "allowed" if allowed else "denied",
                             "true" if alert_sent else "false").inc()
        if evaluation is not None:
            for result in evaluation.results:
                self.policy_evaluations.labels(
                    result.policy, namespace, "pass" if result.passed else "fail").inc()
        self.duration.observe(seconds)

    def notification(self, channel: Channel, outcome: NotifyOutcome, count: int = 1) -> None:
        """Count ``count`` notifications of one channel with one outcome."""
        self.notifications.labels(channel, outcome).inc(count)

    def observe_load(self, report: LoadReport) -> None:
        self.policies_loaded.set(len(report.policies))
        self.policy_load_errors.set(len({e.policy or e.origin for e in report.errors}))
