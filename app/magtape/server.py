"""Runs the webhook: wires settings, engine, notifier, runtime and two waitress listeners.

This is the only place that assembles the collaborators; ``create_app`` takes
them injected, so tests build isolated apps the same way.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry
from waitress.server import create_server

from magtape.engine import PolicyEngine
from magtape.kube import client as kube_client
from magtape.kube.certs import certificate_expiry_or_nan
from magtape.kube.runtime import start as start_runtime
from magtape.metrics import Metrics
from magtape.notify import Notifier
from magtape.notify.factory import build_notifier
from magtape.settings import EngineKind, Settings
from magtape.web import create_app, create_metrics_app

log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> PolicyEngine:
    if settings.engine is EngineKind.OPA:
        from magtape.engine.opa import OpaEngine

        return OpaEngine(settings.opa_url, settings.engine_timeout_seconds)
    from magtape.engine.embedded import EmbeddedEngine

    return EmbeddedEngine(settings.engine_timeout_seconds, workers=settings.threads)


@dataclass
class Webhook:
    """A running webhook: both listeners plus the background collaborators."""

    settings: Settings
    engine: PolicyEngine
    metrics: Metrics
    notifier: Notifier
    _servers: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def admission_port(self) -> int:
        return int(self._servers[0].effective_port)

    @property
    def metrics_port(self) -> int:
        return int(self._servers[1].effective_port)

    def serve_apps(self, admission: Flask, metrics_app: Flask) -> None:
        s = self.settings
        self._servers = [
            create_server(admission, host=s.listen.host, port=s.listen.port, threads=s.threads,
                          ident="magtape", clear_untrusted_proxy_headers=True,
                          channel_timeout=30, connection_limit=512),
            create_server(metrics_app, host=s.metrics_listen.host, port=s.metrics_listen.port,
                          threads=2, ident="magtape-metrics"),
        ]
        for server in self._servers:
            t = threading.Thread(target=server.run, name=f"waitress-{server.effective_port}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        log.info("admission listener on %s:%d, metrics on %s:%d", s.listen.host,
                 self.admission_port, s.metrics_listen.host, self.metrics_port)

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Let requests in flight finish, close the listeners, flush notifications."""
        for server, thread in zip(self._servers, self._threads, strict=True):
            stop_waitress(server, thread, flush_seconds)
        for stop in self._stoppers:
            stop()
        self.notifier.close(flush_seconds)


def stop_waitress(server: Any, thread: threading.Thread, timeout: float) -> None:
    """Stop a waitress server running ``server.run()`` in ``thread``.

    Requests in flight finish first. The sockets are closed from inside
    waitress' own loop (through its trigger): closing them from another thread
    races the loop's select() and fails with EBADF. With its map empty, the
    loop returns.
    """
    server.accepting = False
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout)

    def close_all() -> None:
        for channel in list(server._map.values()):
            channel.close()

    server.trigger.pull_trigger(close_all)
    thread.join(timeout)


def start(settings: Settings, registry: CollectorRegistry | None = None,
          api_client: ApiClient | None = None) -> Webhook:
    """Start a webhook in background threads (used by ``magtape serve`` and tests).

    Without ``api_client`` it runs locally: built-in or --policies policies,
    no Events, no policy discovery, no replication.
    """
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    if settings.tls_cert_file:
        cert_file = settings.tls_cert_file
        metrics.certificate_expiry.set_function(lambda: certificate_expiry_or_nan(cert_file))
    engine = build_engine(settings)
    notifier = build_notifier(settings, api_client, metrics)
    runtime = start_runtime(settings, engine, api_client, metrics)
    hook = Webhook(settings, engine, metrics, notifier, _stoppers=[runtime.stop])

    def ready() -> bool:
        return runtime.ready

    hook.serve_apps(create_app(settings, engine, notifier, metrics, ready),
                    create_metrics_app(settings, engine, metrics, ready))
    return hook


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; flush notifications before exiting."""
    hook = start(settings, api_client=kube_client.api_client())
    stopped = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d: shutting down", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()
    hook.stop()
    return 0
