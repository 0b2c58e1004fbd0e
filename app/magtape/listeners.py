"""waitress listeners whose limits hold against idle and trickling clients.

Why it exists: waitress only closes a connection after ``channel_timeout``
seconds *without any byte*, so a client sending one byte every few seconds
keeps a connection (and, once ``connection_limit`` is reached, the whole
listener) for ever; and ``select()`` stops working beyond 1,024 descriptors.
:class:`BoundedServer` adds the missing total-time limit: a request that has
started arriving must be complete (headers and body) within
``request_read_seconds`` of its first byte, however slowly it trickles, or its
connection is closed. Connections with no request in progress are closed after
``idle_seconds``. The checks run every second.

The body size is enforced on the ``Content-Length`` header before any of the
body is buffered (waitress' ``max_request_body_size``), and headers are
limited in size too. Every number is a :class:`ListenerLimits` field and is
documented in docs/security.md.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, Task, ThreadedTaskDispatcher, WSGITask

from magtape.inloop import IN_LOOP_ATTRIBUTE, InLoop
from magtape.web import RECEIVED_ATTRIBUTE, RECEIVED_KEY


@dataclass(frozen=True)
class ListenerLimits:
    """Limits of one listener; the defaults are the admission listener's."""

    threads: int = 4
    # Open connections; beyond it waitress stops accepting (the kernel backlog
    # queues the rest). Far above what the nginx sidecar or Prometheus and the
    # kubelet open, so abusive clients hit the time limits first.
    connection_limit: int = 2048
    # No request in progress for this long: closed. Above nginx's upstream
    # keepalive_timeout (15 s), so nginx never reuses a connection being closed.
    idle_seconds: float = 20.0
    # First byte to last byte of one request (headers and body), in total.
    request_read_seconds: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 3 * 1024 * 1024
    backlog: int = 1024


# The metrics/health listener: Prometheus and the kubelet send tiny GETs.
METRICS_LIMITS = ListenerLimits(threads=2, connection_limit=2048, idle_seconds=10.0,
                                request_read_seconds=5.0, max_header_bytes=8 * 1024,
                                max_body_bytes=1024)


# waitress answers what it refuses itself (too large, bad framing) with these
# JSON bodies, like the app does, instead of its plain-text pages.
_ERROR_TEXT = {413: "request body too large", 431: "request headers too large",
               400: "bad request framing"}


class JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress is untyped
    """waitress' own error responses as MagTape's JSON ``{"error": ...}``."""

    def execute(self) -> None:
        error = self.request.error
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        body = json.dumps({"error": _ERROR_TEXT.get(error.code, str(error.reason).lower())})
        data = body.encode()
        self.content_length = len(data)
        self.write(data)


class _OneSend(Task):  # type: ignore[misc]  # waitress is untyped
    """A response whose body arrives whole goes out with its header in one send.

    waitress writes the header and the first body chunk separately, and with
    its ``send_bytes`` of 1 each write is a flush: two ``send`` calls, two
    rounds of output bookkeeping per admission answer. When the first chunk is
    the whole body (the Content-Length the application set), both go in one
    write; anything else (no length, chunked, a partial body) is waitress' own.
    """

    wrote_header: bool  # waitress' attribute, declared here for the type checker

    def write(self, data: bytes) -> None:
        if (not self.wrote_header and self.complete and data and self.has_body
                and not self.chunked_response and self.content_length == len(data)):
            header = self.build_response_header()
            self.wrote_header = True
            self.content_bytes_written += len(data)
            self.channel.write_soon(header + data)
            return
        super().write(data)


class OneSendTask(_OneSend, WSGITask):  # type: ignore[misc]  # waitress is untyped
    """A WSGI task whose whole-body answer goes out in one send."""

    def get_environment(self) -> dict[str, Any]:
        """waitress' environ, with when the request had been read (RECEIVED_KEY):
        the engine's deadline counts from then, queueing for a thread included."""
        environ: dict[str, Any] = super().get_environment()
        environ[RECEIVED_KEY] = getattr(self.request, RECEIVED_ATTRIBUTE, None)
        return environ


class LoopTask(_OneSend):
    """A review the loop took (magtape.inloop), answered by its endpoint without
    WSGI; waitress' Task builds the header (its keep-alive and close rules)."""

    def execute(self) -> None:
        endpoint, received = getattr(self.request, IN_LOOP_ATTRIBUTE)
        status, body = endpoint.answer(self.request.get_body_stream().read(), received)
        self.status = f"{status} {HTTPStatus(status).phrase}"
        self.response_headers = [("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body)))]
        self.content_length = len(body)
        self.complete = True
        self.write(body)


def _task_for(channel: HTTPChannel, request: Any) -> Any:
    """The task serving ``request``: the in-loop admission task for a review the
    loop took (magtape.inloop), else a WSGI one."""
    if hasattr(request, IN_LOOP_ATTRIBUTE):
        return LoopTask(channel, request)
    return OneSendTask(channel, request)


class DeadlineChannel(HTTPChannel):  # type: ignore[misc]  # waitress is untyped
    """An HTTP channel that remembers when the request being read began."""

    task_class = staticmethod(_task_for)
    error_task_class = JsonErrorTask
    reading_since: float | None = None

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.reading_since is None:
            self.reading_since = time.time()
        result: bool = super().received(data)
        if self.request is None:  # nothing left half-read
            self.reading_since = None
        # Stamp the requests read whole (OneSendTask passes it on; magtape.inloop
        # reads it for a pipelined review).
        if self.requests:
            now = time.monotonic()
            with self.requests_lock:
                for request in self.requests:
                    if not hasattr(request, RECEIVED_ATTRIBUTE):
                        setattr(request, RECEIVED_ATTRIBUTE, now)
        return result

    def writable(self) -> bool:
        """Not while a request is being served, unless closing or over the watermark.

        waitress' own rule (any byte buffered) makes its main loop spin while
        a task thread sends its response: poll() reports the socket writable,
        the flush finds the output lock held by the task thread, and the loop
        polls again, holding the GIL the task needs (tens of loop passes per
        admission request; docs/performance.md has the measurement). The
        task thread flushes its own writes, and waitress wakes the loop when a
        task ends (``pull_trigger``), so whatever is left is sent then; above
        the high watermark the task waits for the loop, so that stays writable.
        A review served in the loop (magtape.inloop) is written by the loop
        itself; what the socket did not take goes once the review is done.
        """
        if self.will_close or self.close_when_flushed:
            return True
        if self.requests and self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return False
        return bool(self.total_outbufs_len)


class BoundedServer(TcpWSGIServer):  # type: ignore[misc]  # waitress is untyped
    """waitress' TCP server plus the total-time limit on reading a request."""

    channel_class = DeadlineChannel
    request_read_seconds = ListenerLimits.request_read_seconds
    # Small admission reviews answered in the loop thread (None: all go to task threads).
    inloop: InLoop | None = None

    def add_task(self, task: Any) -> None:
        """A request read whole (``task`` is its channel): the loop's own when it
        takes it, else a task thread's."""
        if self.inloop is None or not self.inloop.takes(task):
            super().add_task(task)

    def pull_trigger(self) -> None:
        # From the loop thread (an in-loop request finishing) the loop is awake
        # already and builds its poll set afresh next: no wake-up byte needed.
        if self.inloop is None or not self.inloop.in_loop_thread():
            super().pull_trigger()

    def run(self) -> None:
        if self.inloop is None:
            super().run()
            return
        try:
            self.inloop.run(self)
        except (SystemExit, KeyboardInterrupt):  # as waitress' own run()
            self.task_dispatcher.shutdown()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections (channel_timeout)
        cutoff = now - self.request_read_seconds
        for channel in list(self.active_channels.values()):
            since = getattr(channel, "reading_since", None)
            if since is not None and since < cutoff:
                channel.will_close = True


class SharedPortServer(BoundedServer):
    """A BoundedServer whose port other processes may bind too (SO_REUSEPORT):
    the kernel spreads connections over them (magtape.processes)."""

    def set_reuse_addr(self) -> None:  # waitress calls it just before bind()
        super().set_reuse_addr()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def create_bounded_server(app: Any, host: str, port: int, limits: ListenerLimits,
                          ident: str, shared: bool = False) -> BoundedServer:
    """A started (listening) server; call ``run()`` on a thread to serve.
    ``shared``: other processes bind the same port (SO_REUSEPORT)."""
    adj = Adjustments(
        host=host, port=port, threads=limits.threads, ident=ident,
        # No proxy-header middleware: MagTape reads no X-Forwarded-* header (nor
        # REMOTE_ADDR), so clearing them bought nothing and cost a pass over every
        # request's headers (docs/performance.md).
        clear_untrusted_proxy_headers=False,
        connection_limit=limits.connection_limit,
        channel_timeout=max(1, round(limits.idle_seconds)),
        cleanup_interval=1, backlog=limits.backlog,
        max_request_header_size=limits.max_header_bytes,
        # waitress refuses a Content-Length >= this, so +1 lets exactly the limit in.
        max_request_body_size=limits.max_body_bytes + 1,
        # poll(), not select(): select() fails beyond 1,024 descriptors.
        asyncore_use_poll=True,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    server_class = SharedPortServer if shared else BoundedServer
    server = server_class(app, {}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
    server.request_read_seconds = limits.request_read_seconds
    return server
