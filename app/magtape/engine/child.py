"""One crash-isolated child process, spoken to in length-prefixed frames.

Everything that runs policy code (serving workers, vetting a new policy set,
``magtape test``) runs it in a child started by :class:`Child`: a fresh
``python -m <module>`` (spawned, never forked from this threaded process),
with an address-space cap (``RLIMIT_AS``) it applies to itself, and a parent
that waits for every answer with a deadline. When the deadline passes the
child is SIGKILLed, so a runaway evaluation frees its capacity at once; a
crash or an exhausted memory cap shows up as end-of-file on the pipe.

Wire format, both directions: one byte of opcode, four bytes of big-endian
payload length, the payload. Payloads are opaque bytes (JSON in practice).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Literal

HEADER = struct.Struct(">cI")
# The first read of an answer takes up to this much: an ordinary answer whole.
READ_BYTES = 64 * 1024
# A frame larger than this is a defect or an attack on the parent, not an answer.
MAX_FRAME_BYTES = 256 * 1024 * 1024


# How the calling context waits for a child's pipe: (fd, select.POLLIN or
# select.POLLOUT, deadline as time.monotonic()) -> ready (False: the deadline
# passed). Unset, the calling thread blocks in poll(); an admission request
# answered in waitress' loop thread sets one that yields to the loop until the
# pipe is ready (magtape.inloop), so one thread waits for every worker at once.
FdWait = Callable[[int, int, float], bool]
FD_WAIT: ContextVar[FdWait | None] = ContextVar("magtape_fd_wait", default=None)

# Why a child gave no answer (magtape_policy_engine_errors_total reasons).
ChildFailure = Literal["timeout", "crash", "memory"]


class ChildLate(Exception):
    """No answer came by the caller's deadline, none of it was read, and the child
    has ``grace`` left: it is alive and owes that answer (:meth:`Child.finish_late`)."""


class ChildDied(Exception):
    """The child gave no answer; it has been killed and must be replaced."""

    def __init__(self, failure: ChildFailure, detail: str, from_outside: bool = False) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        # SIGKILLed by someone else (an operator, the OOM killer) before answering:
        # the request cannot have caused it, so it may be retried elsewhere.
        self.from_outside = from_outside


@dataclass(frozen=True)
class Frame:
    op: bytes
    payload: bytes


class Op:
    """Every opcode of the children's protocols, in one place.

    Requests to an engine worker (engine/worker.py): P load a policy set, D set
    the data, I evaluate a review, V vet one policy, L vet the libraries.
    Answers: A allowed (nothing denied), C a compiled-mode answer, F findings,
    K done (vetting verdicts, loads), E an error. ``magtape test``'s child
    (ruletest.py) uses C compile, T run the tests, V coverage, and answers
    K, E (the errors) or R (the results).
    """

    LOAD, DATA, EVALUATE, VET_POLICY, VET_LIBRARIES = b"P", b"D", b"I", b"V", b"L"
    ALLOWED, COMPILED, FINDINGS, OK, ERROR = b"A", b"C", b"F", b"K", b"E"
    TEST_COMPILE, TEST_RUN, TEST_COVERAGE, TEST_RESULT = b"C", b"T", b"V", b"R"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``python -m magtape...``: this very package
    importable, whether installed or run from a source tree."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["RUST_BACKTRACE"] = "0"  # error messages, not stack dumps, come back from regorus
    env.update(extra or {})
    return env


class Child:
    """A child process answering one frame with one frame; not thread-safe.

    The caller owns the child exclusively between :meth:`call` s (the worker
    pool lends each child to one thread at a time).
    """

    def __init__(self, module: str, memory_mb: int, args: Sequence[str] = ()) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, str(memory_mb), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env=child_env(), close_fds=True, start_new_session=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out: IO[bytes] = self._proc.stdin
        self._in_fd = self._proc.stdout.fileno()
        os.set_blocking(self._out.fileno(), False)
        os.set_blocking(self._in_fd, False)
        self._poll_in = select.poll()
        self._poll_in.register(self._in_fd, select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(self._out.fileno(), select.POLLOUT)
        self.dead = False
        self._reading = False  # part of the current answer has been read
        self._late_until = 0.0  # until when a late call's answer may come

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exited(self) -> bool:
        """The process has ended (without reaping a zombie's status: that is kill's job)."""
        return self.dead or self._proc.poll() is not None

    def call(self, op: bytes, payload: bytes, timeout: float, grace: float = 0.0) -> Frame:
        """Send one frame and return the answer; ChildDied after killing the child.

        ``grace``: seconds past ``timeout`` the child may still take before it is
        killed. A call not answered by ``timeout`` then raises ChildLate, and the
        caller must collect the answer with :meth:`finish_late` before the next call.
        """
        deadline = time.monotonic() + timeout
        if self.dead:
            raise ChildDied("crash", "the worker process is gone")
        with self._killed_on_failure(f"no answer within {timeout:g}s"):
            self._write(HEADER.pack(op, len(payload)) + payload, deadline)
            self._reading = False
            try:
                return self._read_frame(deadline)
            except TimeoutError:
                if grace <= 0 or self._reading:  # part of an answer read: no way back
                    raise
                self._late_until = deadline + grace
                raise ChildLate(f"no answer within {timeout:g}s") from None

    def finish_late(self) -> None:
        """Read and drop the answer a late call owes, waiting up to its grace;
        ChildDied (the child killed) when it does not come."""
        with self._killed_on_failure("no answer within the engine's timeout"):
            self._read_frame(self._late_until)

    @contextlib.contextmanager
    def _killed_on_failure(self, timeout_detail: str) -> Iterator[None]:
        """Every way a call can fail, as ChildDied, the child killed (or found dead)."""
        try:
            yield
        except TimeoutError:
            self.kill()
            raise ChildDied("timeout", f"{timeout_detail}; the worker was killed") from None
        except (BrokenPipeError, ConnectionResetError, EOFError):
            failure = self._exit_failure()
            raise ChildDied(failure, "the worker process died ("
                            + ("memory cap exceeded" if failure == "memory"
                               else f"exit status {self._proc.returncode}") + ")",
                            from_outside=self._proc.returncode == -signal.SIGKILL) from None
        except ChildDied:
            self.kill()
            raise

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        fd = self._out.fileno()
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view:
                self._wait(self._poll_out, fd, select.POLLOUT, deadline)

    def _read_frame(self, deadline: float) -> Frame:
        """The answer: wait for it, then read it whole (one poll and one read for
        an ordinary answer; the child writes each frame with one write)."""
        chunks: list[bytes] = []
        have, need, op = 0, HEADER.size, b""
        while have < need:
            self._wait(self._poll_in, self._in_fd, select.POLLIN, deadline)
            try:
                chunk = os.read(self._in_fd, READ_BYTES if not op else min(need - have, 1 << 20))
            except BlockingIOError:  # woken without data: wait again
                continue
            if not chunk:
                raise EOFError
            self._reading = True
            chunks.append(chunk)
            have += len(chunk)
            if not op and have >= HEADER.size:
                head = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks = [head]
                op, length = HEADER.unpack_from(head)
                if length > MAX_FRAME_BYTES:
                    raise ChildDied("crash", f"the worker sent a {length}-byte frame")
                need = HEADER.size + length
        if have > need:  # one request, one answer: anything more is a defect
            raise ChildDied("crash", "the worker sent more than one answer")
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Frame(op, data[HEADER.size:])

    @staticmethod
    def _wait(poller: select.poll, fd: int, event: int, deadline: float) -> None:
        """Until ``poller``'s pipe (``fd``, ``event``) is ready; TimeoutError at ``deadline``."""
        wait = FD_WAIT.get()
        if wait is not None:
            ready = wait(fd, event, deadline)
        else:
            left = deadline - time.monotonic()
            ready = left > 0 and bool(poller.poll(max(1, int(left * 1000))))
        # Not ready before the deadline (rounding) just means "try again".
        if not ready and time.monotonic() >= deadline:
            raise TimeoutError

    def _exit_failure(self) -> ChildFailure:
        """Reap the dead child; MEMORY when it died the way an exhausted cap kills.

        Under RLIMIT_AS, an allocation failure in regorus (Rust) aborts the
        process (SIGABRT) and one in Python ends it with MemoryError, which
        the worker turns into exit status 3 (see magtape.engine.worker).
        """
        self.kill()
        code = self._proc.returncode
        if code in (-signal.SIGABRT, 3):
            return "memory"
        return "crash"

    def kill(self) -> None:
        """SIGKILL the child (and anything it started) and reap it."""
        self.dead = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


# ---------------------------------------------------------------- child side

class ChildSide:
    """The child's end: read a frame from stdin, write one to the real stdout.

    File descriptor 1 is pointed at stderr once the protocol pipe is saved, so
    a stray ``print`` (or a library writing to stdout) cannot corrupt frames.
    """

    def __init__(self, memory_mb: int) -> None:
        # Buffered: a request's header and payload usually come in one read.
        self._in = os.fdopen(0, "rb", buffering=READ_BYTES)
        self._out = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        limit_memory(memory_mb)
        die_with_parent()

    def read(self) -> Frame | None:
        header = self._read_exactly(HEADER.size)
        if header is None:
            return None
        op, length = HEADER.unpack(header)
        payload = self._read_exactly(length)
        return None if payload is None else Frame(op, payload)

    def _read_exactly(self, size: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < size:
            chunk = self._in.read(size - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def write(self, op: bytes, payload: bytes) -> None:
        self._out.write(HEADER.pack(op, len(payload)) + payload)


def limit_memory(memory_mb: int) -> None:
    """Cap this process' address space (0: no cap)."""
    if memory_mb <= 0:
        return
    import resource

    cap = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl: nobody is listening
        os._exit(0)
