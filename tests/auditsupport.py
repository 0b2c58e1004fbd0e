"""Audit series for the Prometheus test: a real audit of a few objects, tallied into metrics.

The dashboards' audit panels need ``magtape_audit_*`` series with data; they
come from the Auditor deciding real objects with the test's engine, exactly
as the controller feeds them (tally), not from numbers written by hand.
"""

from __future__ import annotations

import time

from magtape.audit.results import Auditor
from magtape.audit.tally import tally
from magtape.enforcement import EnforcementState, Enforcer
from magtape.engine.embedded import EmbeddedEngine
from magtape.metrics import AuditMetrics, Metrics
from magtape.policy import DenyLevel
from magtape.remediation import default_catalogue
from notifysupport import deployment


def feed_audit_metrics(metrics: Metrics, engine: EmbeddedEngine,
                       namespaces: tuple[str, ...]) -> AuditMetrics:
    audit = AuditMetrics(metrics.registry)
    auditor = Auditor(Enforcer(EnforcementState(), DenyLevel.LOW), engine.evaluate,
                      default_catalogue())
    objects = [deployment(f"old-{i}", *labels, namespace=ns) for ns in namespaces
               for i, labels in enumerate([(), ("fail-low",), ("fail-high",)])]
    started = time.monotonic()
    audit.set_findings(*tally(auditor.audit(o) for o in objects))
    audit.duration.set(time.monotonic() - started)
    audit.last_completed.set(time.time())
    audit.leader.set(1)
    return audit
