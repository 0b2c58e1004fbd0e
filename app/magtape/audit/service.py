"""The audit as ``magtape serve`` runs it (``MAGTAPE_AUDIT=on``): capacity, election, controller.

:func:`prepare` runs before the policy store is built (it may wrap
admission's engine in a :class:`~magtape.audit.capacity.Mirror`);
:meth:`AuditService.start` runs once the webhook's Enforcer exists. Every
replica takes part in the election; only the leader watches the audited
kinds, evaluates and writes, so N replicas cost one audit.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from magtape.audit.capacity import AuditEngine, Gated, Mirror, SharedSource, is_loader
from magtape.audit.controller import AuditController, AuditOptions, Source
from magtape.audit.kinds import audit_kinds, served
from magtape.audit.report import ReportLimits
from magtape.audit.results import Auditor
from magtape.enforcement import Enforcer
from magtape.engine import Evaluator
from magtape.kube.rest import RawApi
from magtape.metrics import AuditMetrics, Metrics
from magtape.remediation import catalogue_for
from magtape.settings import AuditMode, AuditScope, Settings

log = logging.getLogger(__name__)

LEASE_NAME = "magtape-audit"


def options_for(settings: Settings) -> AuditOptions:
    return AuditOptions(
        rate_per_second=settings.audit_rate,
        full_interval_seconds=settings.audit_interval_seconds,
        all_namespaces=settings.audit_namespaces is AuditScope.ALL,
        limits=ReportLimits(settings.audit_max_results, settings.audit_max_report_bytes))


class AuditService:
    """One replica's part of the audit."""

    def __init__(self, settings: Settings, engine: Evaluator, api_client: Any) -> None:
        self.settings = settings
        self._kinds = audit_kinds(settings.audit_kinds)  # ConfigError early
        self._api = RawApi(api_client)
        self._own: AuditEngine | None = None
        self.source: Any
        if is_loader(engine):
            self._own = AuditEngine(settings)
            self.loader: Evaluator = Mirror(engine, self._own)
            self.source = self._own
        else:
            self.loader = engine
            self.source = SharedSource(engine)
        self.identity = f"{settings.pod_name}-{uuid.uuid4().hex[:8]}"
        self.controller: AuditController | None = None
        self._elector: Any = None
        self._lock = threading.Lock()
        self._metrics: AuditMetrics | None = None
        self._auditor: Auditor | None = None

    def start(self, enforcer: Enforcer, metrics: Metrics,
              admission_ready: Callable[[], bool] = lambda: True) -> None:
        """Join the election; lead only once ``admission_ready`` (the first sync loaded)."""
        from magtape.audit.lease import LeaderElector

        self.source = Gated(self.source, admission_ready)
        s = self.settings
        self._metrics = AuditMetrics(metrics.registry)
        self._auditor = Auditor(enforcer, self.source.evaluate,
                                catalogue_for(s.policy_dirs, s.docs_url))
        lease = s.audit_lease_seconds
        self._elector = LeaderElector(self._api, s.namespace_name, LEASE_NAME, self.identity,
                                      on_start=self._lead, on_stop=self._follow,
                                      lease_seconds=lease, retry_seconds=lease / 5)
        self._elector.start()

    @property
    def leading(self) -> bool:
        return bool(self._elector is not None and self._elector.leading)

    def _lead(self) -> None:
        assert self._auditor is not None and self._metrics is not None
        kinds = served(self._api, self._kinds, self.settings.namespace_name)
        source: Source = self.source
        controller = AuditController(self._api, kinds, self._auditor, source, self._metrics,
                                     options_for(self.settings))
        with self._lock:
            self.controller = controller
        self._metrics.leader.set(1)
        log.info("audit: watching %s", ", ".join(map(str, kinds)))
        controller.start()

    def _follow(self) -> None:
        with self._lock:
            controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()
        if self._metrics is not None:
            self._metrics.leader.set(0)
            self._metrics.clear()

    def stop(self) -> None:
        if self._elector is not None:
            self._elector.stop()  # steps down (stopping the controller) and releases the Lease
        if self._own is not None:
            self._own.close()


def prepare(settings: Settings, engine: Evaluator, api_client: Any) -> AuditService | None:
    """The audit service when ``MAGTAPE_AUDIT=on`` and there is a cluster, else None."""
    if settings.audit is AuditMode.OFF:
        return None
    if api_client is None:
        log.warning("MAGTAPE_AUDIT=on needs a Kubernetes API (none found): no audit")
        return None
    return AuditService(settings, engine, api_client)
