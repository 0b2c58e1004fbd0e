"""A supervised pool of engine worker processes.

Each worker (:mod:`magtape.engine.worker`) holds the active policy set and
the cluster data. A request borrows an idle worker, sends it the review and
waits with a hard deadline; a worker that misses the deadline, crashes or hits
its memory cap is SIGKILLed and a supervisor thread starts a replacement, so
capacity is freed at once and never wedged. The GIL is released while a
thread waits on its worker's pipe, so N threads evaluate on N cores.

A request served in waitress' loop thread (magtape.inloop) must not block
that thread: its context names a :class:`WorkerWaiter` (:data:`WORKER_WAITER`)
through which it waits for an idle worker, in turn with the others, and to
which a worker it returns goes straight to the next request waiting there.
Threads waiting for a worker are served first.

The pool keeps the current policy set and data as ready-to-send frames with a
version each. Every worker records the versions it holds; :meth:`broadcast`
brings every worker up to date, and a worker that lags when it is borrowed
(one replaced meanwhile) is brought up to date first.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from magtape import background
from magtape.engine import Reason
from magtape.engine.child import Child, ChildDied, ChildLate, Frame, Op

log = logging.getLogger(__name__)

WORKER_MODULE = "magtape.engine.worker"
# Starting Python and regorus and loading a policy set with 20k namespaces of
# data takes well under this on a loaded 2-core machine.
START_TIMEOUT_SECONDS = 30.0
# Reviews above this size (a Deployment with a few hundred containers) take
# tens of milliseconds or more to evaluate; see WorkerPool.call.
LARGE_PAYLOAD_BYTES = 64 * 1024
# The least time a worker gets for a call (or the engine's whole timeout, if less).
MIN_CALL_SECONDS = 0.05


class PoolUnavailable(Exception):
    """No worker could take the request; ``failure`` says why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail


@dataclass(eq=False)
class _Worker:
    child: Child
    policy_version: int = 0
    data_version: int = 0
    late: bool = False  # still owes the answer to a call its request gave up on


class WorkerWaiter(Protocol):
    """How a request served in waitress' loop waits for a worker (magtape.inloop)."""

    @property
    def waiting(self) -> bool:
        """Whether requests are waiting for a worker (they come first)."""
        ...

    def wait_for_worker(self, deadline: float) -> _Worker | None:
        """In a request's context: the worker handed to it, or None at ``deadline``."""
        ...

    def hand_over(self, worker: _Worker) -> bool:
        """Give ``worker`` to the first waiting request; False when none waits or this
        thread cannot (the worker then goes to the idle queue)."""
        ...

    def spawn(self, work: Callable[[], None]) -> None:
        """Run ``work`` in the loop, after the current request, in a context like its."""
        ...


# The waiter of the request this context serves; unset, the calling thread blocks.
WORKER_WAITER: ContextVar[WorkerWaiter | None] = ContextVar("magtape_worker_waiter",
                                                            default=None)


@dataclass
class _State:
    policy: Frame | None = None
    policy_version: int = 0
    data: Frame = field(default_factory=lambda: Frame(Op.DATA, b"{}"))
    data_version: int = 0


class WorkerPool:
    """N worker processes; thread-safe."""

    def __init__(self, workers: int, timeout_seconds: float, memory_mb: int) -> None:
        self._timeout = timeout_seconds
        self._memory_mb = memory_mb
        # queue.Queue, not the cheaper SimpleQueue: its waiters are served in
        # turn (a Condition), where SimpleQueue let one HTTP thread starve for
        # a second behind the others (p99 1.2 s with one worker, docs/performance.md).
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._large_slots = max(1, workers - 1)
        self._large = threading.BoundedSemaphore(self._large_slots)
        self._large_waiting = 0  # large requests queued for a slot
        self._lock = threading.Lock()
        self._state = _State()
        self._alive = 0
        self._all: set[_Worker] = set()  # started and not yet lost, idle or busy
        self._closed = False
        self._wanted = threading.Condition(self._lock)
        self._missing = workers  # slots the supervisor has to fill
        self._threads_waiting = 0  # threads blocked for an idle worker (served first)
        # Called whenever a worker becomes idle, from whichever thread returns it.
        self.on_idle: Callable[[], None] | None = None
        self._start_failures = background.Backoff(initial=1.0, maximum=30.0)
        self._supervisor = background.Worker("magtape-engine-pool", self._supervise,
                                             wake=self._wake_supervisor).start()

    @property
    def alive(self) -> int:
        """Workers that are started and serving (idle or busy)."""
        with self._lock:
            return self._alive

    def wait_alive(self, timeout: float) -> bool:
        """Wait until at least one worker serves (start-up); False on timeout."""
        with self._lock:
            return self._wanted.wait_for(lambda: self._alive > 0 or self._closed, timeout) \
                and self._alive > 0

    # ------------------------------------------------------------ requests
    def call(self, op: bytes, payload: bytes, timeout: float | None = None) -> Frame:
        """Send one frame to an up-to-date worker; PoolUnavailable when none answers.

        Large payloads (over LARGE_PAYLOAD_BYTES) may occupy at most all but
        one worker at a time, with as many more waiting: a burst of huge
        objects queues behind itself (and the excess is refused at once)
        while ordinary requests keep a worker and HTTP threads of their own.
        """
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        # In the loop, a request holds one worker at a time, waiting in turn: the
        # large-object rule (which blocks) is the task threads'.
        if len(payload) <= LARGE_PAYLOAD_BYTES or WORKER_WAITER.get() is not None:
            return self._call_any(op, payload, deadline)
        with self._lock:
            if self._large_waiting >= self._large_slots:
                # Each waiting request holds an HTTP thread: refuse at once
                # rather than let a burst of huge objects take them all.
                raise PoolUnavailable("unavailable", "too many large objects are being "
                                      "evaluated at once; retry shortly")
            self._large_waiting += 1
        try:
            if not self._large.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise PoolUnavailable("timeout", "other large requests kept the engine "
                                      "workers for large objects busy until the deadline")
        finally:
            with self._lock:
                self._large_waiting -= 1
        try:
            return self._call_any(op, payload, deadline)
        finally:
            self._large.release()

    def _call_any(self, op: bytes, payload: bytes, deadline: float) -> Frame:
        """One call on a borrowed worker; once more on another when the first was
        SIGKILLed from outside (it died dying, between the liveness check and the
        answer: not because of this request)."""
        for attempt in (1, 2):
            try:
                with self.borrow(deadline) as worker:
                    return self._call(worker, op, payload, deadline)
            except _KilledFromOutside as exc:
                if attempt == 2:
                    raise PoolUnavailable("crash", str(exc)) from None
        raise AssertionError("unreachable")

    def offer_idle(self, waiter: WorkerWaiter) -> None:
        """Hand idle workers to the requests waiting in ``waiter`` (the loop calls it
        when a worker came back on another thread); threads waiting come first."""
        while waiter.waiting and not self._threads_waiting:
            worker = self._idle_nowait()
            if worker is None:
                return
            waiter.hand_over(worker)  # in the loop, with a review waiting: taken

    def _none_idle(self) -> PoolUnavailable:
        if self.alive == 0:
            return PoolUnavailable("unavailable", "no engine worker is running (they are "
                                   "being restarted); see the MagTape logs")
        return PoolUnavailable("timeout", "every engine worker stayed busy until the deadline")

    def _idle_nowait(self) -> _Worker | None:
        """An idle worker that is still alive, or None."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return None
            if not worker.child.exited():
                return worker
            worker.child.kill()  # died while idle (killed from outside)
            self._lost(worker)

    def _put_idle(self, worker: _Worker) -> None:
        """A worker is free: to the next request waiting in the loop when this is one
        of them and no thread waits, else to the idle queue (and tell the loop)."""
        waiter = WORKER_WAITER.get()
        if waiter is not None and not self._threads_waiting and waiter.hand_over(worker):
            return
        self._idle.put(worker)
        if self.on_idle is not None:
            self.on_idle()

    def broadcast(self, policy: Frame | None = None, data: Frame | None = None) -> None:
        """Make ``policy`` and/or ``data`` current and push them to the workers.

        Every evaluation that borrows a worker after this call starts brings
        that worker up to date first, so decisions follow at once; pushing
        here only keeps that cost off the request path. A worker that fails to
        take them is replaced (its replacement starts with them).
        """
        with self._lock:
            if policy is not None:
                self._state.policy = policy
                self._state.policy_version += 1
            if data is not None:
                self._state.data = data
                self._state.data_version += 1
            count = self._alive
        # Each idle worker is borrowed, brought up to date and returned at once,
        # so requests keep flowing meanwhile. A busy one is not waited for: the
        # next request that borrows it brings it up to date first. (Waiting
        # for busy workers let a steady stream of requests, which take each
        # worker back as soon as it is returned, hold a reload for tens of
        # seconds.)
        for _ in range(count):
            with self._lock:
                current = (self._state.policy_version, self._state.data_version)
                if all((w.policy_version, w.data_version) == current for w in self._all):
                    return
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            if self._sync(worker, time.monotonic() + START_TIMEOUT_SECONDS):
                self._put_idle(worker)

    @contextlib.contextmanager
    def borrow(self, deadline: float) -> Iterator[_Worker]:
        """An idle, up-to-date worker until the block ends (waiting for one up to
        ``deadline``); PoolUnavailable when none came."""
        while True:
            if self._closed:
                raise PoolUnavailable("unavailable", "the engine is shut down")
            try:
                # With no worker alive (all being replaced) this waits for a
                # replacement, up to the request's own deadline.
                worker = self._wait_idle(deadline)
            except queue.Empty:
                raise self._none_idle() from None
            if worker.child.exited():  # died while idle (killed from outside)
                worker.child.kill()
                self._lost(worker)
                continue
            # Catching up with a new policy set or data (20,000 namespaces take a
            # worker ~0.15 s) is not the request's evaluation: it gets the engine's
            # whole timeout, so a worker is not killed for it when the request's
            # deadline is close. A request whose deadline passed meanwhile gives the
            # worker back and times out.
            if not self._sync(worker, max(deadline, time.monotonic() + self._timeout)):
                continue
            if time.monotonic() < deadline:
                break
            self._put_idle(worker)
            raise PoolUnavailable("timeout", "bringing an engine worker up to date with a new "
                                  "policy set or cluster data took until the deadline")
        try:
            yield worker
        finally:
            if not worker.child.dead and not worker.late:
                self._put_idle(worker)

    def _wait_idle(self, deadline: float) -> _Worker:
        waiter = WORKER_WAITER.get()
        if waiter is not None:  # in the loop: never block it; wait in turn
            found = None if waiter.waiting or self._threads_waiting else self._idle_nowait()
            found = found or waiter.wait_for_worker(deadline)
            if found is None:
                raise queue.Empty
            return found
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            self._threads_waiting += 1
        try:
            return self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            with self._lock:
                self._threads_waiting -= 1
                last = not self._threads_waiting
            # Requests in the loop let this thread go first, even past a second idle
            # worker: tell the loop, so it hands out what is idle now.
            if last and self.on_idle is not None:
                self.on_idle()

    def _sync(self, worker: _Worker, deadline: float) -> bool:
        """Bring ``worker`` to the current state; False (and replaced) when it failed."""
        with self._lock:
            state = self._state
            policy, pv, data, dv = (state.policy, state.policy_version, state.data,
                                    state.data_version)
        try:
            if worker.data_version != dv:
                self._expect_ok(self._call(worker, data.op, data.payload, deadline, sync=True))
                worker.data_version = dv
            if policy is not None and worker.policy_version != pv:
                self._expect_ok(self._call(worker, policy.op, policy.payload, deadline,
                                           sync=True))
                worker.policy_version = pv
        except (PoolUnavailable, _SyncRefused) as exc:
            log.error("engine worker %d could not take the current policy set or data: %s",
                      worker.child.pid, exc)
            if not worker.child.dead:
                worker.child.kill()
                self._lost(worker)
            return False
        return True

    @staticmethod
    def _expect_ok(frame: Frame) -> None:
        if frame.op != Op.OK:
            raise _SyncRefused(frame.payload.decode(errors="replace"))

    def _call(self, worker: _Worker, op: bytes, payload: bytes, deadline: float,
              sync: bool = False) -> Frame:
        # A worker handed over just before the deadline still gets a short time to
        # answer (the answer comes at most that late): killed and restarted instead,
        # an overload would take workers away exactly when they are all needed.
        allowed = max(min(MIN_CALL_SECONDS, self._timeout), deadline - time.monotonic())
        # A request that gives up at its deadline leaves its worker evaluating up to
        # the engine's timeout from the call's start (what makes an evaluation a
        # runaway): the late answer is dropped (by the loop, or a thread of its own)
        # and the worker serves again, where killing it would take capacity away in
        # an overload.
        grace = 0.0 if sync else max(0.0, self._timeout - allowed)
        try:
            return worker.child.call(op, payload, allowed, grace)
        except ChildLate as exc:
            worker.late = True
            waiter = WORKER_WAITER.get()
            if waiter is not None:
                waiter.spawn(lambda: self._finish_late(worker))
            else:
                threading.Thread(target=self._finish_late, args=(worker,),
                                 name="magtape-engine-late", daemon=True).start()
            raise PoolUnavailable("timeout", f"{exc}; the worker goes on until "
                                  f"{self._timeout:g}s") from None
        except ChildDied as exc:
            self._lost(worker)
            if exc.from_outside and not sync:
                raise _KilledFromOutside(exc.detail) from None
            reason: Reason = exc.failure
            if exc.failure == "timeout" and sync:
                reason = "unavailable"
            raise PoolUnavailable(reason, exc.detail) from None

    def _finish_late(self, worker: _Worker) -> None:
        """Drop a late answer, then the worker serves again (killed if none comes)."""
        try:
            worker.child.finish_late()
        except ChildDied:
            self._lost(worker)
            return
        worker.late = False
        self._put_idle(worker)

    # --------------------------------------------------------- supervision
    def _lost(self, worker: _Worker) -> None:
        with self._lock:
            if worker not in self._all:  # never counted (failed while starting)
                return
            self._all.discard(worker)
            self._alive -= 1
            self._missing += 1
            self._wanted.notify_all()

    def _supervise(self) -> bool:
        """One step of the supervisor: start a missing worker. It is the only thread
        that starts them (their parent-death signal follows the thread that started
        them); False once the pool is closed."""
        with self._lock:
            while not self._closed and self._missing == 0:
                self._wanted.wait()
            if self._closed:
                return False
            self._missing -= 1
        worker = self._start_worker()
        with self._lock:
            if worker is None:
                self._missing += 1
            elif self._closed:
                worker.child.kill()
                return False
            else:
                self._alive += 1
                self._all.add(worker)
                self._wanted.notify_all()
        if worker is None:
            # A worker that cannot start (broken install, no memory) would
            # otherwise be retried in a tight loop.
            self._supervisor.wait(self._start_failures.next())
            return True
        self._start_failures.reset()
        self._put_idle(worker)
        return True

    def _start_worker(self) -> _Worker | None:
        try:
            worker = _Worker(Child(WORKER_MODULE, self._memory_mb))
        except OSError as exc:
            log.error("cannot start an engine worker: %s", exc)
            return None
        if not self._sync(worker, time.monotonic() + START_TIMEOUT_SECONDS):
            return None
        log.debug("engine worker %d started", worker.child.pid)
        return worker

    def close(self) -> None:
        """Kill every worker now (SIGTERM handling, tests); the pool stays closed."""
        with self._lock:
            self._closed = True
            self._wanted.notify_all()
            workers = list(self._all)
            self._all.clear()
            self._alive = 0
        for worker in workers:  # busy ones too: their borrowers get "crash"
            worker.child.kill()
        self._supervisor.stop(timeout=START_TIMEOUT_SECONDS)

    def _wake_supervisor(self) -> None:
        with self._lock:
            self._wanted.notify_all()


class _KilledFromOutside(Exception):
    """The borrowed worker was SIGKILLed by someone else before it answered."""


class _SyncRefused(Exception):
    """A worker answered a policy set or data frame with an error."""
