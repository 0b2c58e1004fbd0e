"""``magtape ui``: the read-only compliance page, wired: five watches, one model, waitress.

One shared informer per resource (PolicyReports, Namespaces,
MagTapeExceptions, the enforcement ConfigMap, MagTape's Events;
magtape.kube.informers, as in the webhook) fills the
:class:`~magtape.ui.model.Model`; the Flask app reads only that. Every list
and watch call is observed so the page can say when its data went stale; the
informers keep the last known state and reconnect on their own.
Listens on 127.0.0.1 by default: reach it with ``kubectl port-forward``
(docs/ui.md). Read-only: the identity needs only get/list/watch.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from magtape.kube.informers import Informers, WatchTimings
from magtape.kube.rest import (
    CONFIGMAPS,
    EVENTS,
    NAMESPACES,
    KubeError,
    RawApi,
    ResourceRef,
    WatchStream,
)
from magtape.listeners import ListenerLimits, create_bounded_server
from magtape.remediation import remedies_for
from magtape.settings import Settings
from magtape.ui.model import Health, Model
from magtape.wiring.enforcement import EXCEPTIONS

log = logging.getLogger(__name__)

POLICY_REPORTS = ResourceRef("wgpolicyk8s.io/v1alpha2", "policyreports")
REPORT_SELECTOR = "app.kubernetes.io/managed-by=magtape"  # audit.report.MANAGED_BY
EVENT_SELECTOR = "magtape-event=policy-failure"  # notify.events.EVENT_LABELS
DEFAULT_LISTEN = ("127.0.0.1", 8080)
EXIT_USAGE = 2


@dataclass(frozen=True)
class UiOptions:
    host: str = DEFAULT_LISTEN[0]
    port: int = DEFAULT_LISTEN[1]
    history: int = 5000  # Events kept after the API server deletes them
    allowed_hosts: tuple[str, ...] = ()  # names besides loopback (a proxy's)
    threads: int = 4
    watch_timeout_seconds: int = 300
    backoff_max_seconds: float = 10.0


class ObservedApi(RawApi):
    """The RawApi whose list and watch calls report success or failure to :class:`Health`."""

    def __init__(self, client: Any, health: Health, timeout_seconds: float = 15.0) -> None:
        super().__init__(client, timeout_seconds)
        self._health = health

    def list(self, ref: ResourceRef, namespace: str | None = None,
             label_selector: str | None = None) -> dict[str, Any]:
        try:
            doc = super().list(ref, namespace, label_selector)
        except KubeError:
            self._health.failed(str(ref))
            raise
        self._health.succeeded(str(ref))
        return doc

    def watch(self, ref: ResourceRef, namespace: str | None, resource_version: str,
              label_selector: str | None = None, timeout_seconds: int = 300) -> WatchStream:
        try:
            stream = super().watch(ref, namespace, resource_version, label_selector,
                                   timeout_seconds)
        except KubeError:
            self._health.failed(str(ref))
            raise
        return _ObservedStream(stream, self._health, str(ref))


class _ObservedStream(WatchStream):
    """A watch that marks its resource stale when it breaks (not when it is closed).

    Wraps the open stream rather than reopening one: the base class's state
    (the response) belongs to ``inner``, which does the work.
    """

    def __init__(self, inner: WatchStream, health: Health, resource: str) -> None:
        self._inner, self._health, self._resource = inner, health, resource

    def __iter__(self) -> Any:
        try:
            yield from self._inner
        except KubeError:
            self._health.failed(self._resource)
            raise

    def close(self) -> None:
        self._inner.close()


def informers(settings: Settings, api: RawApi, model: Model, options: UiOptions) -> Informers:
    """One informer per resource, each handler registered (start them with ``start()``).
    Each names its ResourceRef constant here, where tests/test_rbac.py reads the calls
    magtape-ui's RBAC must grant."""
    found = Informers(api, WatchTimings(watch_timeout_seconds=options.watch_timeout_seconds,
                                        backoff_max_seconds=options.backoff_max_seconds))
    found.subscribe(POLICY_REPORTS, model.reports, label_selector=REPORT_SELECTOR)
    found.subscribe(NAMESPACES, model.namespaces)
    found.subscribe(EXCEPTIONS, model.exception_watch)
    found.subscribe(CONFIGMAPS, model.config_watch, namespace=settings.identity.namespace)
    found.subscribe(EVENTS, model.history, label_selector=EVENT_SELECTOR)
    for selection in found.selections:
        model.health.expect(str(selection.ref))
    return found


def build_model(settings: Settings, options: UiOptions) -> Model:
    return Model(settings.deny_level, remedies_for(settings),
                 settings.exceptions.enforcement_configmap, options.history,
                 spawn=in_background)


def in_background(work: Callable[[], None]) -> None:
    """The model's index rebuilds: off the request threads, so views never wait."""
    threading.Thread(target=work, name="magtape-ui-index", daemon=True).start()


# A person's browser behind kubectl port-forward: small GETs, few connections.
UI_LIMITS = ListenerLimits(threads=4, connection_limit=256, idle_seconds=30.0,
                           request_read_seconds=10.0, max_header_bytes=16 * 1024,
                           max_body_bytes=1024, backlog=128)


def run_ui(settings: Settings, options: UiOptions, err: TextIO, api_client: Any = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    from magtape.server import stop_waitress
    from magtape.ui.web import create_app

    if api_client is None:
        from magtape.kube import client as kube_client

        api_client = kube_client.api_client()
    if api_client is None:
        print("magtape ui: no cluster found; run it in the cluster (components/ui) or set "
              "KUBECONFIG", file=err)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    model = build_model(settings, options)
    watches = informers(settings, ObservedApi(api_client, model.health), model, options)
    try:
        server = create_bounded_server(create_app(model, options.allowed_hosts),
                                       options.host, options.port,
                                       replace(UI_LIMITS, threads=options.threads),
                                       "magtape-ui")
    except OSError as exc:
        print(f"magtape ui: cannot listen on {options.host}:{options.port} (--listen): "
              f"{exc.strerror or exc}", file=err)
        return EXIT_USAGE
    watches.start()
    thread = threading.Thread(target=server.run, name="waitress-ui", daemon=True)
    thread.start()
    log.info("magtape ui listening on http://%s:%d/ (read-only)", options.host,
             server.effective_port)
    stop.wait()
    stop_waitress(server, thread, 5.0)
    watches.stop()
    return 0
