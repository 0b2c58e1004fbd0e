"""Runs the webhook: the assembled collaborators (magtape.wiring) behind two waitress listeners.

``create_app`` takes the collaborators injected, so tests build isolated apps
the same way; magtape.wiring is the one place that assembles them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flask import Flask
from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry

from magtape.engine import Evaluator
from magtape.engine.child import die_with_parent
from magtape.engine.embedded import EmbeddedEngine
from magtape.inloop import InLoop
from magtape.kube import client as kube_client
from magtape.listeners import METRICS_LIMITS, ListenerLimits, create_bounded_server
from magtape.metrics import Metrics
from magtape.notify import Notifier
from magtape.processes import (
    Helpers,
    MergedRegistry,
    announce_metrics_port,
    helper_index,
    helper_settings,
)
from magtape.settings import ConfigError, Settings
from magtape.web import ENDPOINT_EXTENSION, create_app, create_metrics_app
from magtape.wiring import Assembly, assemble

log = logging.getLogger(__name__)

# How long helper processes get to drain on SIGTERM, as this process' own
# listeners and notifications do (Webhook.stop).
STOP_SECONDS = 5.0


@dataclass
class Webhook:
    """A running webhook: both listeners plus the assembled collaborators."""

    assembly: Assembly
    _servers: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.assembly.settings

    @property
    def engine(self) -> Evaluator:
        return self.assembly.engine

    @property
    def metrics(self) -> Metrics:
        return self.assembly.metrics

    @property
    def notifier(self) -> Notifier:
        return self.assembly.notifier

    @property
    def admission_port(self) -> int:
        return int(self._servers[0].effective_port)

    @property
    def metrics_port(self) -> int:
        return int(self._servers[1].effective_port)

    def serve_apps(self, admission: Flask, metrics_app: Flask) -> None:
        """Start both listeners with the limits of docs/security.md."""
        s = self.settings
        admission_limits = replace(ListenerLimits(), threads=s.http.threads,
                                   max_body_bytes=s.http.max_body_bytes)
        self._servers = []
        for address, flag, app, limits, ident in (
                (s.http.listen, "--listen/MAGTAPE_LISTEN", admission, admission_limits, "magtape"),
                (s.http.metrics_listen, "--metrics-listen/MAGTAPE_METRICS_LISTEN", metrics_app,
                 METRICS_LIMITS, "magtape-metrics")):
            # More than one process per pod: all of them bind the admission port.
            shared = app is admission and s.http.processes > 1
            try:
                self._servers.append(create_bounded_server(app, address.host, address.port,
                                                           limits, ident, shared))
            except OSError as exc:  # name the address: "address in use" alone says not which
                raise ConfigError(f"cannot listen on {address} ({flag}): "
                                  f"{exc.strerror or exc}; stop what uses it or choose "
                                  "another address") from None
        engine = self.assembly.engine
        if isinstance(engine, EmbeddedEngine):  # the OPA engine has no worker pool
            self._servers[0].inloop = InLoop(admission.extensions[ENDPOINT_EXTENSION],
                                             engine.pool)
        for server in self._servers:
            t = threading.Thread(target=server.run, name=f"waitress-{server.effective_port}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        log.info("admission listener on %s:%d, metrics on %s:%d", s.http.listen.host,
                 self.admission_port, s.http.metrics_listen.host, self.metrics_port)

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Let requests in flight finish, close the listeners, then everything else in the
        reverse of its start (notifications flushed last)."""
        for server, thread in zip(self._servers, self._threads, strict=True):
            stop_waitress(server, thread, flush_seconds)
        self.assembly.close(flush_seconds)


def stop_waitress(server: Any, thread: threading.Thread, timeout: float) -> None:
    """Stop a waitress server running ``server.run()`` in ``thread``.

    Requests in flight finish first. The sockets are closed from inside
    waitress' own loop (through its trigger): closing them from another thread
    races the loop's select() and fails with EBADF. With its map empty, the
    loop returns.
    """
    server.accepting = False
    end = time.monotonic() + timeout
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout)
    inloop = getattr(server, "inloop", None)
    if inloop is not None:  # reviews answered in the loop finish too, within the same time
        inloop.drain(max(0.0, end - time.monotonic()))

    def close_all() -> None:
        if inloop is not None:
            inloop.closing()
        for channel in list(server._map.values()):
            channel.close()

    try:
        server.trigger.pull_trigger(close_all)
    except OSError as exc:
        # The loop's wake-up pipe is already closed (waitress closes it on an
        # error in the loop): nothing can wake the loop, so close from here.
        log.warning("listener %s: its wake-up pipe is gone (%s); closing its sockets "
                    "directly", server.effective_port, exc)
        close_all()
    thread.join(timeout)


def start(settings: Settings, registry: CollectorRegistry | None = None,
          api_client: ApiClient | None = None, helpers: Helpers | None = None,
          process: int = 0) -> Webhook:
    """Start a webhook in background threads (used by ``magtape serve`` and tests).

    Without ``api_client`` it runs locally: built-in or --policies policies,
    no Events, no policy discovery, no replication. ``helpers``: this is the
    primary of several processes (magtape.processes); ``process``: this
    process' index among them.
    """
    assembly = assemble(settings, registry, api_client)
    hook = Webhook(assembly)

    def ready() -> bool:
        return assembly.ready() and (helpers is None or helpers.ready())

    def reasons() -> list[str]:
        out = assembly.not_ready_reasons()
        if helpers is not None and not helpers.ready():
            out.append("helper processes not ready: another MAGTAPE_PROCESSES process is "
                       "still starting")
        return out

    exposed = (MergedRegistry(assembly.metrics.registry, helpers.expositions)
               if helpers is not None else None)
    # The admission port's /readyz is this process' own: with several
    # processes a probe there reaches any of them (the kubelet's go to the
    # metrics port, the primary's).
    try:
        hook.serve_apps(create_app(assembly.service, assembly.ready, settings, assembly.metrics,
                                   process, assembly.not_ready_reasons),
                        create_metrics_app(ready, settings, assembly.metrics, exposed, process,
                                           reasons))
    except BaseException:
        assembly.close()
        raise
    return hook


def serve(settings: Settings, argv: Sequence[str] = ("serve",)) -> int:
    """Run until SIGTERM/SIGINT; flush notifications before exiting.

    With ``MAGTAPE_PROCESSES`` above 1 this process (the primary) also starts
    and stops its helpers, ``magtape`` with ``argv`` again (magtape.processes).
    """
    stopped = threading.Event()
    lost: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d: shutting down", signum)
        stopped.set()

    def on_lost(why: str) -> None:
        log.error("%s: stopping every process of this pod so that it restarts whole", why)
        lost.append(why)
        stopped.set()

    # Before start(): a signal that arrives once the listeners are up (or
    # while they start) must stop the server cleanly, not kill it.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    index = helper_index()
    if not index:  # once per pod, not once per helper process
        log.info("effective configuration: %s", settings.summary())
        for warning in settings.config_warnings:
            log.warning("configuration: %s", warning)
    helpers = None
    if settings.http.processes > 1 and settings.http.listen.port == 0:
        raise ConfigError(f"MAGTAPE_PROCESSES={settings.http.processes} needs a fixed admission "
                          f"port, but --listen/MAGTAPE_LISTEN is {settings.http.listen} (port 0 "
                          "gives each process a port of its own): choose a port")
    if index:
        die_with_parent()
        settings = helper_settings(settings)
    elif settings.http.processes > 1:
        helpers = Helpers(settings.http.processes - 1, argv, on_lost)
    hook = start(settings, api_client=kube_client.api_client(), helpers=helpers, process=index)
    if helpers is not None:
        helpers.start()
    if index:
        announce_metrics_port(hook.metrics_port)
    stopped.wait()
    if helpers is not None:  # they drain while this process does
        helpers.terminate()
    hook.stop()
    if helpers is not None:
        helpers.wait(timeout=STOP_SECONDS)
    return 1 if lost else 0
