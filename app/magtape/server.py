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
from prometheus_client import CollectorRegistry
from waitress.server import create_server

from magtape.engine import PolicyEngine
from magtape.engine.sources import builtin_modules, load_data_files, modules_from_dirs
from magtape.metrics import Metrics
from magtape.notify import Notifier, NullNotifier
from magtape.settings import EngineKind, Settings
from magtape.web import create_app, create_metrics_app

log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> PolicyEngine:
    if settings.engine is EngineKind.OPA:
        from magtape.engine.opa import OpaEngine

        return OpaEngine(settings.opa_url, settings.engine_timeout_seconds)
    from magtape.engine.embedded import EmbeddedEngine

    return EmbeddedEngine(settings.engine_timeout_seconds, workers=settings.threads)


def load_local_policies(settings: Settings, engine: PolicyEngine) -> None:
    """Load the built-in policies (or --policies dirs) and --data files."""
    modules = modules_from_dirs(settings.policy_dirs) if settings.policy_dirs else builtin_modules()
    report = engine.load(modules, load_data_files(settings.data_files))
    if not report.policies:
        log.warning("no policy loaded: every request will be allowed without checks")


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
        for server in self._servers:
            for channel in list(server._map.values()):
                if channel is not server:
                    channel.close()
            server.close()
            server.task_dispatcher.shutdown(cancel_pending=False, timeout=flush_seconds)
        for stop in self._stoppers:
            stop()
        self.notifier.close(flush_seconds)

    def wait(self) -> None:
        for t in self._threads:
            t.join()


def start(settings: Settings, registry: CollectorRegistry | None = None,
          api_client: Any = None) -> Webhook:
    """Start a webhook in background threads (used by ``magtape serve`` and tests).

    Without ``api_client`` it runs locally: built-in or --policies policies,
    no Events, no policy discovery, no replication.
    """
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    engine = build_engine(settings)
    notifier = _notifier(settings, api_client, metrics)
    hook = Webhook(settings, engine, metrics, notifier)
    ready: Callable[[], bool] = lambda: engine.ready  # noqa: E731
    runtime = _runtime(settings, engine, api_client, metrics)
    if runtime is not None:
        ready = lambda: bool(runtime.ready)  # noqa: E731
        hook._stoppers.append(runtime.stop)
    else:
        load_local_policies(settings, engine)
        if engine.last_report is not None:
            metrics.observe_load(engine.last_report)
    hook.serve_apps(create_app(settings, engine, notifier, metrics, ready),
                    create_metrics_app(settings, engine, metrics, ready))
    return hook


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; flush notifications before exiting."""
    hook = start(settings, api_client=_api_client())
    stopped = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d: shutting down", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()
    hook.stop()
    return 0


def _api_client() -> Any:
    try:
        from magtape.kube.client import api_client
    except ImportError:
        return None
    return api_client()


def _notifier(settings: Settings, api_client: Any, metrics: Metrics) -> Notifier:
    try:
        from magtape.notify.factory import build_notifier
    except ImportError:
        return NullNotifier()
    return build_notifier(settings, api_client, metrics)


def _runtime(settings: Settings, engine: PolicyEngine, api_client: Any, metrics: Metrics) -> Any:
    """The in-cluster runtime (policy discovery, replication) when there is a cluster."""
    if api_client is None:
        return None
    from magtape.kube.runtime import start as start_runtime

    return start_runtime(settings, engine, api_client, metrics)
