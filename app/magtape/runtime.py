"""Runtime wiring: policy store, policy discovery and data replication, started together.

``magtape serve`` calls :func:`start`. For an engine that loads its own
policies (the embedded one), the local policy set (built-ins or
``MAGTAPE_POLICY_DIRS``) and the data files are loaded before it returns, so
the webhook can answer at once, with or without a cluster; an engine that
only evaluates (``opa``: kube-mgmt loads OPA) gets no store and no reload
machinery at all. With a cluster, its handlers follow Namespaces, the
``MAGTAPE_REPLICATE`` kinds and, when ``MAGTAPE_POLICY_DISCOVERY`` is on, the
policy ConfigMaps, on the process' shared informers (magtape.kube.informers).
:attr:`Runtime.ready` turns true once every one of them has completed its
first list and the engine has loaded the result, so a new pod only receives
admissions once it enforces the cluster's policy set with the cluster's data.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from magtape.background import Backoff
from magtape.engine import Evaluator, PolicyCounter, PolicyLoader
from magtape.engine.sources import base_data, policy_modules
from magtape.engine.store import PolicyStore
from magtape.kube.discovery import PolicyDiscovery
from magtape.kube.informers import Informer, Informers
from magtape.kube.replication import ReplicatedKind, replicated_kinds
from magtape.kube.rest import CONFIGMAPS
from magtape.metrics import Metrics
from magtape.policy import PolicyModule
from magtape.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """A running runtime; ``stop()`` ends its own threads (the informers are the wiring's)."""

    engine: Evaluator
    store: PolicyStore | None  # None: the engine loads no policies (opa)
    informers: list[Informer] = field(default_factory=list)
    discovery: PolicyDiscovery | None = None
    _sync_generation: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ready(self) -> bool:
        """A policy set is active and reflects the first sync of every watched kind."""
        if self.store is None:
            return self.engine.ready
        with self._lock:
            target = self._sync_generation if self.informers else -1
        return (self.engine.ready and target is not None
                and self.store.loaded_generation >= target)

    def not_ready_reasons(self) -> list[str]:
        """Why :attr:`ready` is false, one sentence each; empty when ready (for /readyz)."""
        reasons: list[str] = []
        if not self.engine.ready:
            explain = getattr(self.engine, "not_ready_reasons", None)
            reasons += (explain() if explain is not None else [])
            if not reasons:
                reasons.append("the policy engine does not answer its health check")
        if self.store is None:
            return reasons
        waiting = [i.description for i in self.informers if not i.synced.is_set()]
        if waiting:
            reasons.append("API data not synced: waiting for the first list of "
                           + ", ".join(waiting))
        elif not self.ready and not reasons:
            reasons.append("API data synced, not loaded yet: the engine is loading the "
                           "first sync")
        return reasons

    def _informer_synced(self) -> None:
        with self._lock:
            if (self.store is not None and self._sync_generation is None
                    and all(i.synced.is_set() for i in self.informers)):
                self._sync_generation = self.store.generation
                log.info("first sync complete; waiting for the engine to load it")

    def stop(self) -> None:
        if self.discovery is not None:
            self.discovery.writer.stop()
        if self.store is not None:
            self.store.stop()


def local_modules(settings: Settings) -> list[PolicyModule]:
    """The policy set used without discovery (and until discovery's first list)."""
    return policy_modules(settings.engine.policy_dirs)


def start(settings: Settings, engine: Evaluator, informers: Informers | None,
          metrics: Metrics) -> Runtime:
    """Load the local set now; with a cluster, register discovery and replication on
    ``informers`` (which the caller starts once every handler is registered)."""
    kinds = replicated_kinds(settings.cluster.replicate_kinds)
    if not isinstance(engine, PolicyLoader):
        # kube-mgmt loads policies and data into OPA and owns the status
        # annotation; a second writer would fight it. The gauge asks OPA.
        if isinstance(engine, PolicyCounter):
            counter = engine
            metrics.policies_loaded.set_function(lambda: counter.policies_loaded)
        if settings.cluster.policy_discovery:
            log.warning("MAGTAPE_POLICY_DISCOVERY is ignored with the opa engine: kube-mgmt "
                        "loads the policy ConfigMaps into OPA")
        return Runtime(engine, None)
    store = PolicyStore(engine, metrics, local_modules(settings), base_data(settings))
    report = store.load_now()
    if report is not None and not report.policies and not settings.cluster.policy_discovery:
        log.warning("no policy loaded: every request will be allowed without checks")
    runtime = Runtime(engine, store)
    store.start()
    if informers is None:
        if settings.cluster.policy_discovery:
            log.warning("MAGTAPE_POLICY_DISCOVERY is on but there is no Kubernetes API: "
                        "serving the local policies")
        return runtime
    timings = informers.timings
    if settings.cluster.policy_discovery:
        ns = settings.policy_namespace
        runtime.discovery = PolicyDiscovery(
            informers.api, store, ns,
            Backoff(timings.backoff_initial_seconds, timings.backoff_max_seconds))
        runtime.discovery.writer.start()
        runtime.informers.append(informers.informer(
            CONFIGMAPS, ns, settings.cluster.policy_selector))
    runtime.informers += [informers.informer(ref) for ref in kinds]
    handlers = ([runtime.discovery] if runtime.discovery is not None else []) + [
        ReplicatedKind(store, ref) for ref in kinds]
    for informer, handler in zip(runtime.informers, handlers, strict=True):
        informer.add(handler, on_synced=runtime._informer_synced)
    return runtime
