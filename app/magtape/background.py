"""One lifecycle for every background loop: thread, stop, wait, join, defects.

Each loop beside the request path (notification lanes, Slack posts, the
policy store's lanes, the policy status writer, reflectors, the audit's
controller, lease and engine, expiry reminders, the watch over helper
processes) runs as a :class:`Worker`:
one named daemon thread calling the loop's *step* until the step returns
``False`` (the loop is done by its own rule, e.g. a lane has drained its
queue) or the worker is stopped. The worker owns:

- the thread: named (``magtape-...``, shown in thread dumps) and daemon, so
  a step wedged in I/O never blocks the interpreter's exit;
- the stop request: :meth:`Worker.stop` sets it, calls the loop's ``wake``
  hook (notify the loop's own condition, close a watch stream, unblock a
  queue) and joins for at most ``timeout`` seconds, returning whether the
  thread ended. A step sees the request as ``stopping``;
- the loops' sleep: :meth:`Worker.wait` returns at once when a stop is
  requested, so no loop uses ``time.sleep`` and every stop is prompt;
- an unexpected exception out of a step: logged with its traceback, then the
  step runs again after a back-off (``Backoff``: 0.5 s doubling to 30 s,
  jittered; reset by the next step that returns normally). A defect in one
  round therefore neither ends a loop for good nor spins it. Failures a loop
  expects (an API error, a failed post) stay the loop's own business: it
  logs and counts them in its step, with its own retry policy.

What a loop does with work still queued when it is stopped (deliver it, as
the notification lanes do within their deadline, or drop it) is the loop's
policy, not the worker's: ``stop`` only asks, ``wake`` only wakes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Backoff:
    """Exponential back-off with "equal jitter": half fixed, half random, capped."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self._rng = initial, maximum, rng
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * float(2 ** self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return delay / 2 + self._rng() * delay / 2

    def reset(self) -> None:
        self._attempt = 0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (it starts full). Not
    locked: a caller shared between threads holds its own lock around it."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()

    def try_take(self) -> bool:
        """Take a token if there is one now."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def seconds_to_next(self) -> float:
        """How long until a token is there (as of the last :meth:`try_take`)."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


class Worker:
    """A named daemon thread running ``step`` until it returns False or is stopped.

    ``on_start`` runs once in the thread before the first step (e.g. lower the
    thread's priority), ``on_exit`` once after the last one, also after a stop
    (e.g. hand a Lease back). ``wake`` runs in the stopping thread right after
    the stop is requested; it must not block.
    """

    def __init__(self, name: str, step: Callable[[], bool | None], *,
                 wake: Callable[[], None] | None = None,
                 on_start: Callable[[], None] | None = None,
                 on_exit: Callable[[], None] | None = None,
                 backoff: Backoff | None = None) -> None:
        self.name = name
        self._step, self._wake = step, wake
        self._on_start, self._on_exit = on_start, on_exit
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        """A stop was requested (the step should finish what it holds and return)."""
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> Worker:
        self._thread.start()
        return self

    def wait(self, seconds: float | None) -> bool:
        """Sleep for ``seconds`` (None: until stopped); True when a stop was requested."""
        return self._stop.wait(None if seconds is None else max(0.0, seconds))

    def request_stop(self) -> None:
        """Ask the loop to stop and wake it; do not wait for it."""
        self._stop.set()
        if self._wake is not None:
            self._wake()

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to end for at most ``timeout`` seconds; whether it ended."""
        if self._thread.ident is None:  # never started
            return True
        if self._thread is not threading.current_thread():
            self._thread.join(None if timeout is None else max(0.0, timeout))
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """:meth:`request_stop`, then :meth:`join`; whether the thread ended in time."""
        self.request_stop()
        return self.join(timeout)

    def _run(self) -> None:
        try:
            if self._on_start is not None:
                try:
                    self._on_start()
                except Exception:
                    log.exception("%s: could not start; the loop does not run", self.name)
                    return
            while not self._stop.is_set():
                try:
                    if self._step() is False:
                        return
                except Exception:
                    delay = self._backoff.next()
                    log.exception("%s: unexpected failure; running it again in %.1fs",
                                  self.name, delay)
                    self.wait(delay)
                else:
                    self._backoff.reset()
        finally:
            if self._on_exit is not None:
                try:
                    self._on_exit()
                except Exception:
                    log.exception("%s: cleanup failed", self.name)
