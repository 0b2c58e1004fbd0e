"""Small admission reviews answered in waitress' loop thread, suspended while a worker evaluates.

Why it exists: waitress hands every request from its loop thread to a task
thread and back, and a task thread that sends a review to an engine worker
then sleeps until the worker answers and must win the interpreter lock back.
On two CPUs those hand-overs, each a thread waking on a CPU that had gone
idle, cost MagTape's server more than its own Python (docs/performance.md,
"The admission path in the loop"). Here the loop thread itself serves a
review: it parses it, sends it to an engine worker, polls the worker's pipe
beside its sockets while it serves other connections, and answers when the
pipe is ready; no task thread takes part.

How: when waitress has read a request whole it calls ``add_task`` (magtape.
listeners.BoundedServer), which offers it to :meth:`InLoop.takes` first. A
``POST`` to ``/`` of up to 64 KiB (what a worker evaluates in its compiled
mode; larger ones take the task threads and the pool's large-object rule)
queues here, first in first out, until an engine worker is idle. The loop then
runs waitress' own ``channel.service()`` (keep-alive, pipelining, errors,
closing) in a greenlet whose task calls :class:`magtape.web.AdmissionEndpoint`;
the worker is lent to that request for all its evaluations
(:data:`magtape.engine.pool.LEASE`). Whenever the request waits for its
worker's pipe (:data:`magtape.engine.child.FD_WAIT`), the greenlet switches
back to the loop, which resumes it when the pipe is ready or at the request's
deadline, which it keeps as its poll timeout. A review still queued at its
deadline is answered without a worker: the configured failure policy, as a
task thread waiting for a worker that long would answer.

Every other request (other paths and methods, larger bodies) and every review
under the OPA engine (no worker pool) is waitress' task threads' as before.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import select
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import Any

from greenlet import greenlet
from waitress import wasyncore
from waitress.task import Task

from magtape.engine.child import FD_WAIT
from magtape.engine.pool import LARGE_PAYLOAD_BYTES, LEASE, Lease, WorkerPool
from magtape.web import AdmissionEndpoint

log = logging.getLogger(__name__)

# The attribute a request taken here carries: the endpoint that answers it
# (magtape.listeners.DeadlineChannel picks LoopTask for it).
IN_LOOP_ATTRIBUTE = "magtape_in_loop"


class LoopTask(Task):  # type: ignore[misc]  # waitress is untyped
    """A review answered by the endpoint, header and body in one write; waitress'
    Task builds the header (its keep-alive and close rules)."""

    def execute(self) -> None:
        endpoint, received = getattr(self.request, IN_LOOP_ATTRIBUTE)
        status, body = endpoint.answer(self.request.get_body_stream().read(), received)
        self.status = f"{status} {HTTPStatus(status).phrase}"
        self.response_headers = [("Content-Type", "application/json"),
                                 ("Content-Length", str(len(body)))]
        self.content_length = len(body)
        self.complete = True
        header = self.build_response_header()
        self.wrote_header = True
        self.content_bytes_written = len(body)
        self.channel.write_soon(header + body)


class _Queued:
    """A review waiting for an idle worker; ``done`` once started."""

    def __init__(self, channel: Any, deadline: float) -> None:
        self.channel = channel
        self.deadline = deadline
        self.done = False


class _PipeWatch:
    """A worker's pipe in waitress' poll map while one request waits for it: the
    loop resumes the request when the pipe is ready (or hung up), once."""

    accepting = False  # read by waitress' poll2

    def __init__(self, inloop: InLoop, fd: int, event: int, waiter: greenlet,
                 socket_map: dict[int, Any]) -> None:
        self._inloop, self._fd, self._event, self._waiter = inloop, fd, event, waiter
        self._map = socket_map
        self.done = False
        socket_map[fd] = self

    def readable(self) -> bool:
        return self._event == select.POLLIN

    def writable(self) -> bool:
        return self._event == select.POLLOUT

    def fire(self, ready: bool) -> None:
        if self.done:
            return
        self.done = True
        if self._map.get(self._fd) is self:
            del self._map[self._fd]
        self._inloop.resume(self._waiter, ready)

    def _ready(self) -> None:
        self.fire(True)

    # poll2 reports readiness, hang-up and errors alike: the reader finds out which.
    handle_read_event = handle_write_event = handle_expt_event = handle_close = _ready

    def handle_error(self) -> None:
        log.exception("in-loop admission: resuming a request failed")

    def close(self) -> None:  # the listener closing every channel (shutdown)
        self.done = True
        if self._map.get(self._fd) is self:
            del self._map[self._fd]


class InLoop:
    """The admission listener's loop serving small reviews itself (see the module)."""

    def __init__(self, endpoint: AdmissionEndpoint, pool: WorkerPool) -> None:
        self._endpoint = endpoint
        self._pool = pool
        self._queued: deque[_Queued] = deque()
        self._timers: list[tuple[float, int, _Queued | _PipeWatch]] = []
        self._order = itertools.count()
        self._hub: greenlet | None = None
        self._thread: int | None = None
        self._server: Any = None
        self._drained = threading.Condition()
        self.in_flight = 0
        pool.on_idle = self._worker_idle

    # ------------------------------------------------------------ the loop
    def run(self, server: Any) -> None:
        """waitress' loop (its poll2 over the server's map), its poll timeout the
        nearest deadline of a request here; returns once the map is empty."""
        self._server, self._hub, self._thread = server, greenlet.getcurrent(), threading.get_ident()
        default = server.adj.asyncore_loop_timeout
        while server._map:
            wasyncore.poll2(self._poll_timeout(default), server._map)
            self._expire()
            self._start_queued()

    @property
    def queued(self) -> int:
        """Reviews waiting for an idle worker."""
        return len(self._queued)

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def takes(self, channel: Any) -> bool:
        """Queue ``channel``'s first request here when it is a small review read by
        the loop; False leaves it to waitress' task threads."""
        request = channel.requests[0]
        if (request.error or request.command != "POST" or request.path != "/"
                or request.content_length > LARGE_PAYLOAD_BYTES or not self.in_loop_thread()):
            return False
        received = time.monotonic()
        setattr(request, IN_LOOP_ATTRIBUTE, (self._endpoint, received))
        queued = _Queued(channel, received + self._endpoint.engine_timeout)
        self._queued.append(queued)
        self._at(queued.deadline, queued)
        # Started by the loop once this call returns: waitress calls it holding
        # the channel's requests_lock, which serving the request takes again.
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until no review is queued or being answered here; False on timeout."""
        with self._drained:
            return self._drained.wait_for(lambda: not self.in_flight and not self._queued,
                                          timeout)

    # --------------------------------------------------------- scheduling
    def _start_queued(self) -> None:
        """Start queued reviews, oldest first, while engine workers are idle."""
        while self._queued:
            lease = self._pool.lease_nowait()
            if lease is None:
                return
            queued = self._queued.popleft()
            queued.done = True
            self._start(queued.channel, lease)

    def _start(self, channel: Any, lease: Lease) -> None:
        self.in_flight += 1
        greenlet(self._serve, parent=self._hub).switch(channel, lease)

    def _serve(self, channel: Any, lease: Lease) -> None:
        """One review, in its own greenlet (and so its own context variables)."""
        LEASE.set(lease)
        FD_WAIT.set(self._wait_fd)
        try:
            channel.service()  # waitress' own: the task, then keep-alive or close
        except Exception:  # waitress' service catches the task's errors; this is a defect
            log.exception("in-loop admission: serving a request failed; closing its connection")
            channel.will_close = True
        finally:
            self._pool.give_back(lease)
            self.in_flight -= 1
            if not self.in_flight and not self._queued:
                with self._drained:
                    self._drained.notify_all()

    def _wait_fd(self, fd: int, event: int, deadline: float) -> bool:
        """In a review's greenlet: back to the loop until ``fd`` is ready (True) or
        ``deadline`` passes (False)."""
        assert self._hub is not None and greenlet.getcurrent() is not self._hub
        watch = _PipeWatch(self, fd, event, greenlet.getcurrent(), self._server._map)
        self._at(deadline, watch)
        ready: bool = self._hub.switch()
        return ready

    def resume(self, waiter: greenlet, ready: bool) -> None:
        """In the loop: continue a review waiting for its pipe, then start queued ones
        (it may have given its worker back)."""
        waiter.switch(ready)
        self._start_queued()

    def _worker_idle(self) -> None:
        """The pool's on_idle, from any thread: a worker given back in the loop is
        taken by the loop after its switch; one given back elsewhere (a task thread,
        a replacement started) wakes the loop when reviews are queued."""
        if self._queued and not self.in_loop_thread() and self._server is not None:
            self._server.trigger.pull_trigger(self._start_queued)

    # ------------------------------------------------------------ deadlines
    def _at(self, deadline: float, item: _Queued | _PipeWatch) -> None:
        heapq.heappush(self._timers, (deadline, next(self._order), item))

    def _poll_timeout(self, default: float) -> float:
        timers = self._timers
        while timers and timers[0][2].done:
            heapq.heappop(timers)
        if not timers:
            return float(default)
        left = max(0.0, timers[0][0] - time.monotonic())
        # poll2 truncates to whole milliseconds: round up, so a wait never spins
        # through the last fraction of its deadline.
        return min(float(default), (math.ceil(left * 1000) + 0.5) / 1000)

    def _expire(self) -> None:
        """Answer what reached its deadline: a wait resumes as not ready (the caller
        then times out); a review still queued runs without a worker."""
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, item = heapq.heappop(timers)
            if item.done:
                continue
            if isinstance(item, _PipeWatch):
                item.fire(False)
            else:
                item.done = True
                self._queued.remove(item)
                self._start(item.channel, Lease(None))
