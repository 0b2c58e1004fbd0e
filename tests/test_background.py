"""magtape.background.Worker: the lifecycle every background loop shares.

Synchronised with events only: no test sleeps to let a thread get somewhere.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from magtape.background import Backoff, Worker

NO_DELAY = Backoff(0.0, 0.0)


def test_stop_wakes_a_worker_waiting_on_its_own_wait_within_the_timeout() -> None:
    waiting = threading.Event()

    def step() -> bool:
        waiting.set()
        return not worker.wait(None)  # an hour-long nap in a real loop

    worker = Worker("magtape-test-nap", step).start()
    assert waiting.wait(5)
    started = time.monotonic()
    assert worker.stop(timeout=5) is True
    assert time.monotonic() - started < 5 and not worker.alive


def test_stop_calls_wake_for_a_loop_waiting_on_its_own_condition() -> None:
    cond = threading.Condition()
    waiting = threading.Event()

    def step() -> bool:
        with cond:
            waiting.set()
            while not worker.stopping:
                cond.wait()
        return False

    def wake() -> None:
        with cond:
            cond.notify_all()

    worker = Worker("magtape-test-cond", step, wake=wake).start()
    assert waiting.wait(5)
    assert worker.stop(timeout=5) is True


def test_a_step_returning_false_ends_the_loop_and_on_exit_runs_in_the_thread() -> None:
    seen: list[str] = []
    exited = threading.Event()

    def on_exit() -> None:
        seen.append(threading.current_thread().name)
        exited.set()

    worker = Worker("magtape-test-once", lambda: False, on_exit=on_exit).start()
    assert exited.wait(5) and worker.join(5)
    assert seen == ["magtape-test-once"]


def test_join_reports_a_worker_that_does_not_end_in_time() -> None:
    release = threading.Event()
    entered = threading.Event()

    def step() -> bool:
        entered.set()
        release.wait(30)  # ignores the stop request (a post stuck in I/O)
        return False

    worker = Worker("magtape-test-stuck", step).start()
    assert entered.wait(5)
    assert worker.stop(timeout=0.01) is False and worker.alive
    release.set()
    assert worker.join(5) is True


def test_an_unexpected_exception_is_logged_and_the_step_runs_again(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    second = threading.Event()

    def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("defect in round one")
        second.set()
        return False

    caplog.set_level(logging.ERROR, logger="magtape.background")
    worker = Worker("magtape-test-defect", step, backoff=NO_DELAY).start()
    assert second.wait(5) and worker.join(5)
    assert calls == 2
    [record] = [r for r in caplog.records if r.name == "magtape.background"]
    assert "magtape-test-defect" in record.getMessage() and "again" in record.getMessage()
    assert record.exc_info is not None and "defect in round one" in str(record.exc_info[1])


def test_the_back_off_after_a_defect_is_cut_short_by_stop() -> None:
    failed = threading.Event()

    def step() -> bool:
        failed.set()
        raise RuntimeError("always")

    worker = Worker("magtape-test-backoff", step, backoff=Backoff(3600.0, 3600.0)).start()
    assert failed.wait(5)
    assert worker.stop(timeout=5) is True


def test_a_failing_on_start_is_logged_and_the_loop_does_not_run(
        caplog: pytest.LogCaptureFixture) -> None:
    ran = threading.Event()

    def on_start() -> None:
        raise OSError("no engine")

    worker = Worker("magtape-test-start", lambda: bool(ran.set()), on_start=on_start).start()
    assert worker.join(5)
    assert not ran.is_set()
    assert any("could not start" in r.getMessage() for r in caplog.records)


def test_a_worker_never_started_joins_at_once_and_wait_returns_on_stop() -> None:
    worker = Worker("magtape-test-idle", lambda: False)
    assert worker.stop(timeout=0) is True
    assert worker.wait(3600) is True


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(1.0, 4.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 1.0
    assert Backoff(1.0, 4.0, rng=lambda: 0.0).next() == 0.5
