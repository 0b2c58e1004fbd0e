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
import time
import uuid
from collections.abc import Callable
from typing import Any

from magtape.audit.capacity import AuditEngine, Gated, Mirror, SharedSource, is_loader
from magtape.audit.controller import AuditController, AuditOptions
from magtape.audit.kinds import audit_kinds, owner_kinds, served
from magtape.audit.report import ReportLimits
from magtape.audit.results import Auditor
from magtape.enforcement import Enforcer
from magtape.engine import Evaluator
from magtape.kube.informers import Informers
from magtape.metrics import AuditMetrics, Metrics
from magtape.remediation import remedies_for
from magtape.settings import AuditMode, AuditScope, Settings

log = logging.getLogger(__name__)

LEASE_NAME = "magtape-audit"


def options_for(settings: Settings) -> AuditOptions:
    return AuditOptions(
        rate_per_second=settings.audit.rate,
        full_interval_seconds=settings.audit.interval_seconds,
        all_namespaces=settings.audit.namespaces is AuditScope.ALL,
        limits=ReportLimits(settings.audit.max_results, settings.audit.max_report_bytes))


class AuditService:
    """One replica's part of the audit: an elector, and while leading, an engine and controller."""

    def __init__(self, settings: Settings, engine: Evaluator, informers: Informers) -> None:
        self.settings = settings
        self._kinds = audit_kinds(settings.audit.kinds)  # ConfigError early
        self._informers = informers
        self._api = informers.api
        # With the embedded engine the audit gets engine workers of its own
        # while leading, fed by the Mirror; with OPA it shares the sidecar.
        self._mirror = Mirror(engine) if is_loader(engine) else None
        self._shared = None if self._mirror is not None else SharedSource(engine)
        self.loader: Evaluator = self._mirror if self._mirror is not None else engine
        self.identity = f"{settings.identity.pod}-{uuid.uuid4().hex[:8]}"
        self.controller: AuditController | None = None
        self._own: AuditEngine | None = None
        self._elector: Any = None
        self._lock = threading.Lock()
        self._metrics: AuditMetrics | None = None
        self._enforcer: Enforcer | None = None
        self._admission_ready: Callable[[], bool] = lambda: True

    def start(self, enforcer: Enforcer, metrics: Metrics,
              admission_ready: Callable[[], bool] = lambda: True) -> None:
        """Join the election; audit only once ``admission_ready`` (the first sync loaded)."""
        from magtape.audit.lease import LeaderElector

        self._enforcer, self._admission_ready = enforcer, admission_ready
        self._metrics = AuditMetrics(metrics.registry)
        self._metrics.interval.set(self.settings.audit.interval_seconds)
        lease = self.settings.audit.lease_seconds
        self._elector = LeaderElector(self._api, self.settings.identity.namespace, LEASE_NAME,
                                      self.identity, on_start=self._lead, on_stop=self._follow,
                                      lease_seconds=lease, retry_seconds=lease / 5)
        self._elector.start()

    @property
    def leading(self) -> bool:
        return bool(self._elector is not None and self._elector.leading)

    def _lead(self) -> None:
        assert self._enforcer is not None and self._metrics is not None
        s = self.settings
        kinds = served(self._api, self._kinds, s.identity.namespace)
        raw: Any = self._shared
        if self._mirror is not None:
            raw = self._own = AuditEngine(s)
            self._mirror.attach(self._own)
        source = Gated(raw, self._admission_ready)
        auditor = Auditor(self._enforcer, source.evaluate,
                          remedies_for(s),
                          owner_kinds(s.exceptions.controller_owner_kinds))
        controller = AuditController(self._informers, kinds, auditor, source, self._metrics,
                                     options_for(s))
        with self._lock:
            self.controller = controller
        self._metrics.leader.set(1)
        self._metrics.leading_since.set(time.time())
        log.info("audit: watching %s", ", ".join(map(str, kinds)))
        controller.start()

    def _follow(self) -> None:
        with self._lock:
            controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()
        if self._mirror is not None:
            self._mirror.detach()
        own, self._own = self._own, None
        if own is not None:
            own.close()
        if self._metrics is not None:
            self._metrics.leader.set(0)
            self._metrics.leading_since.set(0)
            self._metrics.clear()

    def stop(self) -> None:
        if self._elector is not None:
            self._elector.stop()  # steps down (stopping the audit) and releases the Lease


def prepare(settings: Settings, engine: Evaluator, informers: Informers | None
            ) -> AuditService | None:
    """The audit service when ``MAGTAPE_AUDIT=on`` and there is a cluster, else None."""
    if settings.audit.mode is AuditMode.OFF:
        return None
    if informers is None:
        log.warning("MAGTAPE_AUDIT=on needs a Kubernetes API (none found): no audit")
        return None
    return AuditService(settings, engine, informers)
