"""Assembles the webhook's collaborators, starts them in one order and stops them in reverse.

Why it exists: engine, notifier, policy runtime, enforcement, audit and the
cluster watches depend on each other in a fixed order, and stopping them in
any other order loses work (a notification queued by a late admission) or
leaves a thread behind. This is the one place that knows the order: each
part is started here and its stop pushed on one :class:`contextlib.ExitStack`,
so :meth:`Assembly.close` undoes exactly what was started, last first, also
when a later part fails to start. Every watch of the process goes through one
:class:`~magtape.kube.informers.Informers` (one list/watch per resource),
started only once every handler is registered, so none misses the first list.

``magtape.server`` adds the listeners; tests assemble the same way with a
fake API client and shorter watch timings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry

from magtape.admission import AdmissionService
from magtape.audit.service import prepare as prepare_audit
from magtape.engine import Evaluator
from magtape.kube.certs import certificate_expiry_or_nan
from magtape.kube.informers import Informer, Informers, WatchTimings
from magtape.kube.owners import OwnerIndex
from magtape.kube.rest import NAMESPACES, RawApi
from magtape.metrics import Metrics
from magtape.namespaces import NamespaceDirectory
from magtape.notify import Notifier
from magtape.notify.factory import build_notifier
from magtape.runtime import start as start_runtime
from magtape.settings import EngineKind, Settings
from magtape.wiring.enforcement import (
    build_enforcer,
    enforcement_informers,
    inherit_from_owners,
    watch_enforcement,
)

log = logging.getLogger(__name__)

# How long queued notifications get to go out when the webhook stops.
FLUSH_SECONDS = 5.0


def build_engine(settings: Settings) -> Evaluator:
    """The configured engine; the embedded one also loads policies (PolicyLoader)."""
    if settings.engine.kind is EngineKind.OPA:
        from magtape.engine.opa import OpaEngine
        from magtape.engine.sources import opa_documents

        return OpaEngine(settings.engine.opa_url, settings.engine.timeout_seconds,
                         documents=opa_documents(settings))
    from magtape.engine.embedded import EmbeddedEngine

    return EmbeddedEngine(settings.engine.timeout_seconds, workers=settings.engine.workers,
                          memory_mb=settings.engine.memory_mb,
                          compiled=settings.engine.compiled)


@dataclass
class Assembly:
    """Everything a webhook process runs besides its listeners."""

    settings: Settings
    engine: Evaluator
    metrics: Metrics
    notifier: Notifier
    service: AdmissionService
    ready: Callable[[], bool]  # this process enforces the cluster's policies and data
    not_ready_reasons: Callable[[], list[str]]  # why not, one sentence each (/readyz)
    informers: Informers | None
    _stack: ExitStack
    _flush: dict[str, float]  # {"seconds": ...}: read by the notifier's stop on the stack

    def close(self, flush_seconds: float | None = None) -> None:
        """Stop every part, last started first; queued notifications get ``flush_seconds``."""
        if flush_seconds is not None:
            self._flush["seconds"] = flush_seconds
        self._stack.close()


def assemble(settings: Settings, registry: CollectorRegistry | None = None,
             api_client: ApiClient | None = None,
             timings: WatchTimings | None = None) -> Assembly:
    """Build and start the collaborators; without ``api_client`` it runs locally
    (built-in or --policies policies, no Events, no discovery, no replication)."""
    with ExitStack() as stack:
        informers = (Informers(RawApi(api_client), timings or WatchTimings())
                     if api_client is not None else None)
        # With a cluster, what a review claims about its namespace is checked
        # against the namespaces MagTape sees itself (docs/security.md).
        namespaces = NamespaceDirectory() if informers is not None else None
        metrics = Metrics(registry if registry is not None else CollectorRegistry(), namespaces)
        if settings.cluster.tls_cert_file:
            cert_file = settings.cluster.tls_cert_file
            metrics.certificate_expiry.set_function(
                lambda: certificate_expiry_or_nan(cert_file))
        engine = build_engine(settings)
        close_engine = getattr(engine, "close", None)  # the embedded engine's workers
        if close_engine is not None:
            stack.callback(close_engine)
        notifier = build_notifier(settings, api_client, metrics, namespaces=namespaces)
        # Closed after everything that may still queue a notification, with the drain
        # time Assembly.close is given (the default when a later part fails to start).
        flush = {"seconds": FLUSH_SECONDS}
        stack.callback(lambda: notifier.close(flush["seconds"]))
        # The audit (MAGTAPE_AUDIT=on) may mirror the policy store's loads into its engine.
        audit = prepare_audit(settings, engine, informers)
        runtime = start_runtime(settings, audit.loader if audit else engine, informers, metrics)
        stack.callback(runtime.stop)
        enforcer, state = build_enforcer(settings, runtime.store)
        # Exceptions in force, for the MagTapeExceptionExpiring alert (hack/alerts.py).
        metrics.watch_exceptions(lambda: [
            (e.namespace, e.name, e.expires_at.timestamp())
            for e in enforcer.state.all_exceptions() if e.active(enforcer.now())])
        enforcement_feeds: tuple[Informer, ...] = ()
        owners: OwnerIndex | None = None
        if informers is not None:
            watch_enforcement(settings, informers, state, notifier, stack)
            enforcement_feeds = enforcement_informers(settings, informers)
            owners = inherit_from_owners(settings, informers, enforcer, stack)
            assert namespaces is not None
            informers.subscribe(NAMESPACES, namespaces)
            informers.start()
            stack.callback(informers.stop)
        if audit is not None:
            audit.start(enforcer, metrics, lambda: runtime.ready)
            stack.callback(audit.stop)  # steps down first: its watches leave the informers

        namespace_synced = (informers.informer(NAMESPACES).synced
                            if informers is not None else None)

        def enforcement_waits() -> list[str]:
            """What admission decisions depend on besides the policies, not listed once
            yet: until then exceptions, overrides and owners would be missed, and a
            replica would deny what its peers let through (a controller's retries,
            exempted objects). Without the CRD there is no exception to miss."""
            out = [i.description for i in enforcement_feeds
                   if not i.synced.is_set() and not i.not_served]
            if owners is not None and not owners.synced:
                out.append("the controllers' owners (" + (", ".join(owners.resources)
                                                          or "finding the served kinds") + ")")
            return out

        def ready() -> bool:
            return (runtime.ready and (namespace_synced is None or namespace_synced.is_set())
                    and not enforcement_waits())

        def not_ready_reasons() -> list[str]:
            out = runtime.not_ready_reasons()
            # With a policy store the runtime follows Namespaces itself and says so;
            # without one (the opa engine) only the namespace directory does.
            if (runtime.store is None and namespace_synced is not None
                    and not namespace_synced.is_set()):
                out.append("API data not synced: waiting for the first list of Namespaces")
            waits = enforcement_waits()
            if waits:
                out.append("enforcement data not synced: waiting for the first list of "
                           + ", ".join(waits))
            return out

        service = AdmissionService(settings, engine, notifier, metrics, enforcer=enforcer)
        # Started: the caller owns the stops now.
        return Assembly(settings, engine, metrics, notifier, service, ready, not_ready_reasons,
                        informers, stack.pop_all(), flush)
