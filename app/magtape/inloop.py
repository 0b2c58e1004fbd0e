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
mode; larger ones take the task threads and the pool's large-object rule) is
taken: the loop runs waitress' own ``channel.service()`` for it (keep-alive,
pipelining, errors, closing) in a greenlet whose task calls
:class:`magtape.web.AdmissionEndpoint`. Whenever the request waits, for an
idle engine worker (in turn with the others, :data:`magtape.engine.pool.
WORKER_WAITER`) or for its worker's pipe (:data:`magtape.engine.child.
FD_WAIT`), the greenlet switches back to the loop, which polls the pipe beside
its sockets and resumes the request when it is ready, when a worker is handed
to it, or at its deadline (the loop's poll timeout is the nearest one). A
worker that answers goes straight to the next waiting request, which sends it
its review before the request it answered goes on to decide and reply: the
worker evaluates while the loop does the rest, and is never left idle while
a review waits.

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
from collections.abc import Callable
from typing import Any

from greenlet import greenlet
from waitress import wasyncore

from magtape.engine.child import FD_WAIT
from magtape.engine.pool import LARGE_PAYLOAD_BYTES, WORKER_WAITER, WorkerPool
from magtape.web import RECEIVED_ATTRIBUTE, AdmissionEndpoint

log = logging.getLogger(__name__)

# The attribute a request taken here carries: the endpoint that answers it and
# when it was read (magtape.listeners.DeadlineChannel picks LoopTask for it).
IN_LOOP_ATTRIBUTE = "magtape_in_loop"


class _WorkerWait:
    """A review waiting for an idle worker; ``done`` once handed one or expired."""

    def __init__(self, inloop: InLoop, waiter: greenlet) -> None:
        self._inloop = inloop
        self.waiter = waiter
        self.done = False

    def fire(self, ready: bool) -> None:
        """At the deadline (``ready`` is False): resume the review without a worker."""
        self.done = True
        self._inloop.switch(self.waiter, None)


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
        self.close()
        self._inloop.switch(self._waiter, ready)

    def _ready(self) -> None:
        self.fire(True)

    # poll2 reports readiness, hang-up and errors alike: the reader finds out which.
    handle_read_event = handle_write_event = handle_expt_event = handle_close = _ready

    def handle_error(self) -> None:
        log.exception("in-loop admission: resuming a request failed")

    def close(self) -> None:
        """Out of the poll map, for good (also: the listener closing every channel)."""
        self.done = True
        if self._map.get(self._fd) is self:
            del self._map[self._fd]


class InLoop:
    """The admission listener's loop serving small reviews itself (see the module)."""

    def __init__(self, endpoint: AdmissionEndpoint, pool: WorkerPool) -> None:
        self._endpoint = endpoint
        self._pool = pool
        self._arrived: deque[Any] = deque()  # channels whose review the loop took
        self._waiting: deque[_WorkerWait] = deque()  # in turn for a worker
        self._ready: deque[tuple[greenlet, Any]] = deque()  # to resume, in order
        self._timers: list[tuple[float, int, _WorkerWait | _PipeWatch]] = []
        self._order = itertools.count()
        self._hub: greenlet | None = None
        self._thread: int | None = None
        self._server: Any = None
        self._drained = threading.Condition()
        self._closing = False
        self._running = False
        self._trigger_lock = threading.Lock()
        self.in_flight = 0
        pool.on_idle = self._worker_idle

    # ------------------------------------------------------------ the loop
    def run(self, server: Any) -> None:
        """waitress' loop (its poll2 over the server's map), its poll timeout the
        nearest deadline of a request here; returns once the map is empty."""
        self._server, self._hub, self._thread = server, greenlet.getcurrent(), threading.get_ident()
        default = server.adj.asyncore_loop_timeout
        self._running = True
        try:
            while server._map:
                wasyncore.poll2(self._poll_timeout(default), server._map)
                self._expire()
                self._start_arrived()
        finally:
            self.closing()

    @property
    def queued(self) -> int:
        """Reviews waiting for an idle worker."""
        return sum(not w.done for w in self._waiting)

    @property
    def waiting(self) -> bool:
        """Whether a review waits for a worker (the pool's WorkerWaiter)."""
        while self._waiting and self._waiting[0].done:
            self._waiting.popleft()
        return bool(self._waiting)

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def takes(self, channel: Any) -> bool:
        """Take ``channel``'s first request when it is a small review read by the
        loop; False leaves it to waitress' task threads."""
        request = channel.requests[0]
        # The body's size: waitress sets CONTENT_LENGTH for a chunked body once it
        # has it whole (its content_length attribute stays 0 then).
        if (self._closing or request.error or request.command != "POST" or request.path != "/"
                or int(request.headers.get("CONTENT_LENGTH") or 0) > LARGE_PAYLOAD_BYTES
                or not self.in_loop_thread()):
            return False
        # A pipelined request was stamped when read (magtape.listeners); the first
        # of a read is offered before the stamp, so now is when it was read.
        received = getattr(request, RECEIVED_ATTRIBUTE, None) or time.monotonic()
        setattr(request, IN_LOOP_ATTRIBUTE, (self._endpoint, received))
        # Started by the loop once this call returns: waitress calls it holding
        # the channel's requests_lock, which serving the request takes again.
        self._arrived.append(channel)
        return True

    def drain(self, timeout: float) -> bool:
        """Take no more reviews (they go to the task threads, which are stopping as
        well) and wait until none is being answered here; False on timeout."""
        self._closing = True
        with self._drained:
            return self._drained.wait_for(lambda: not self.in_flight and not self._arrived,
                                          timeout)

    # --------------------------------------------------------- scheduling
    def _start_arrived(self) -> None:
        """Start the reviews taken so far. Only those: one that needs no worker ends
        within this call and may offer the next pipelined one, which waits for the
        next pass, after the other sockets were polled (poll timeout 0)."""
        for _ in range(len(self._arrived)):
            self.in_flight += 1
            self.switch(greenlet(self._serve, parent=self._hub), self._arrived.popleft())

    def switch(self, waiter: greenlet, value: Any) -> None:
        """In the loop: run ``waiter`` until it waits or ends, then whatever became
        ready meanwhile (a review handed a worker, the one that handed it)."""
        waiter.switch(value)
        self._run_ready()

    def _run_ready(self) -> None:
        while self._ready:
            waiter, value = self._ready.popleft()
            waiter.switch(value)

    def _serve(self, channel: Any) -> None:
        """One review, in its own greenlet (and so its own context variables)."""
        self._wait_cooperatively()
        try:
            channel.service()  # waitress' own: the task, then keep-alive or close
        except Exception:  # waitress' service catches the task's errors; this is a defect
            log.exception("in-loop admission: serving a request failed; closing its connection")
            channel.will_close = True
        finally:
            self.in_flight -= 1
            if not self.in_flight and not self._arrived:
                with self._drained:
                    self._drained.notify_all()

    def _wait_cooperatively(self) -> None:
        """In a greenlet's own context: it waits for workers and pipes through the loop."""
        WORKER_WAITER.set(self)
        FD_WAIT.set(self._wait_fd)

    def wait_for_worker(self, deadline: float) -> Any:
        """In a review's greenlet: back to the loop until a worker is handed to it
        (returned) or ``deadline`` passes (None)."""
        wait = _WorkerWait(self, greenlet.getcurrent())
        self._waiting.append(wait)
        self._at(deadline, wait)
        return self._back_to_loop()

    def hand_over(self, worker: Any) -> bool:
        """Give ``worker`` to the first waiting review (the pool calls it when a worker
        is returned). From a review, that one runs first: it sends its review to the
        worker before the returning review goes on."""
        if not self.in_loop_thread() or not self.waiting:
            return False
        wait = self._waiting.popleft()
        wait.done = True
        self._ready.append((wait.waiter, worker))
        current = greenlet.getcurrent()
        if current is not self._hub:
            self._ready.append((current, None))
            self._back_to_loop()
        return True

    def spawn(self, work: Callable[[], None]) -> None:
        """Run ``work`` in its own greenlet once the current one gives the loop back,
        waiting for workers and pipes as a review does (the pool's late answers)."""
        def run(_: Any) -> None:  # started by the loop's switch(greenlet, None)
            self._wait_cooperatively()
            try:
                work()
            except Exception:  # never into the loop
                log.exception("in-loop admission: background work failed")

        self._ready.append((greenlet(run, parent=self._hub), None))

    def _wait_fd(self, fd: int, event: int, deadline: float) -> bool:
        """In a review's greenlet: back to the loop until ``fd`` is ready (True) or
        ``deadline`` passes (False)."""
        watch = _PipeWatch(self, fd, event, greenlet.getcurrent(), self._server._map)
        self._at(deadline, watch)
        ready: bool = self._back_to_loop()
        return ready

    def _back_to_loop(self) -> Any:
        assert self._hub is not None and greenlet.getcurrent() is not self._hub
        return self._hub.switch()

    def _worker_idle(self) -> None:
        """The pool's on_idle, from any thread: a worker that went to the idle queue
        off the loop thread (returned by a task thread, a replacement started) is
        offered to the reviews waiting here by the loop, which a wake-up byte brings
        round. Always, not only when reviews wait: one may be between finding no
        idle worker and starting to wait. Never once the loop has ended (its
        wake-up pipe is closed and its number may be reused)."""
        if self.in_loop_thread():
            return
        with self._trigger_lock:
            if self._running:
                self._server.trigger.pull_trigger(self._offer_idle)

    def closing(self) -> None:
        """In the loop, before it closes its sockets and wake-up pipe (shutdown):
        no wake-up byte from now on."""
        with self._trigger_lock:
            self._running = False

    def _offer_idle(self) -> None:
        self._pool.offer_idle(self)
        self._run_ready()

    # ------------------------------------------------------------ deadlines
    def _at(self, deadline: float, item: _WorkerWait | _PipeWatch) -> None:
        heapq.heappush(self._timers, (deadline, next(self._order), item))

    def _poll_timeout(self, default: float) -> float:
        if self._arrived:
            return 0.0
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
        """Resume what reached its deadline as not ready: a pipe not ready (the
        caller then times out), no worker (the caller answers the failure policy)."""
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, item = heapq.heappop(timers)
            if not item.done:
                item.fire(False)
