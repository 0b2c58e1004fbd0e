"""Small reviews answered in waitress' loop thread (magtape.inloop), through the real webhook.

The loop serves a review itself: it queues for an idle engine worker, runs in
a greenlet that gives the loop back whenever it waits for the worker's pipe,
and is answered with waitress' own keep-alive and pipelining rules. These
tests hold the pool's only worker themselves where a test needs reviews
queued, so nothing depends on how fast this machine evaluates.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import procs
from conftest import REPO, load_objects, review_doc
from magtape.engine.embedded import EmbeddedEngine
from magtape.inloop import InLoop
from magtape.server import Webhook, start
from magtape.settings import (
    Address,
    EngineSettings,
    FailurePolicy,
    HttpSettings,
    NotifySettings,
    Settings,
)
from waiting import eventually

DEPLOYMENT = load_objects(Path(REPO / "testing/deployments/test-deploy02.yaml"))[0]
TIMEOUT = 1.0  # the engine's deadline: what a queued review waits at most


@pytest.fixture
def hook() -> Iterator[Webhook]:
    free = Address("127.0.0.1", 0)
    webhook = start(Settings(http=HttpSettings(listen=free, metrics_listen=free),
                             engine=EngineSettings(workers=1, timeout_seconds=TIMEOUT,
                                                   failure_policy=FailurePolicy.FAIL),
                             notify=NotifySettings(events_enabled=False)))
    yield webhook
    webhook.stop(flush_seconds=2)


def inloop_of(hook: Webhook) -> InLoop:
    inloop = hook._servers[0].inloop
    assert isinstance(inloop, InLoop)
    return inloop


@contextlib.contextmanager
def holding_the_worker(hook: Webhook) -> Iterator[None]:
    """The pool's only worker, borrowed by this test thread: reviews wait in the loop
    meanwhile, and get it when the block ends (returned by a thread other than the
    loop's, which must wake the loop)."""
    engine = hook.engine
    assert isinstance(engine, EmbeddedEngine)
    with engine.pool.borrow(time.monotonic() + 10):
        yield


def post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None
         ) -> tuple[int, dict[str, Any]]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        if own:
            conn.close()


def review_body(obj: dict[str, Any] | None = None) -> bytes:
    return json.dumps(review_doc(dict(obj or DEPLOYMENT))).encode()


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_answers_that_need_no_worker_come_from_the_loop_one_after_another(
        hook: Webhook) -> None:
    """A malformed review is answered without evaluating, inside waitress' call that
    read it (holding the channel's lock): it must not wait for itself."""
    conn = http.client.HTTPConnection("127.0.0.1", hook.admission_port, timeout=5)
    try:
        for body in (b"", b"{", b"[]", review_body()):
            status, doc = post(hook.admission_port, body, conn)
            assert status in (200, 400), doc
        assert doc["response"]["allowed"] is False  # the last, evaluated, on the same connection
    finally:
        conn.close()


def pipelined(*bodies: bytes) -> bytes:
    """POST requests for ``bodies``, back to back, as one write would send them."""
    return b"".join(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body) for body in bodies)


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, Any]]:
    """``count`` responses read from ``sock`` in order: (status, JSON body)."""
    reader = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        answers.append((status, json.loads(reader.read(length))))
    return answers


def test_pipelined_reviews_are_answered_in_order(hook: Webhook) -> None:
    good, bad = review_body(), b"not json"
    with socket.create_connection(("127.0.0.1", hook.admission_port), timeout=10) as sock:
        sock.sendall(pipelined(good, bad, good))
        statuses = [status for status, _ in read_answers(sock, 3)]
    assert statuses == [200, 400, 200]


def test_a_review_queued_past_its_deadline_gets_the_failure_policy(hook: Webhook) -> None:
    with holding_the_worker(hook):
        started = time.monotonic()
        status, doc = post(hook.admission_port, review_body())
        took = time.monotonic() - started
    answer = doc["response"]
    assert status == 200 and answer["allowed"] is False  # Fail
    assert any("every engine worker stayed busy until the deadline" in w
               for w in answer["warnings"]), answer["warnings"]
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 1.5
    # With the worker back, reviews are evaluated again.
    assert not any("could not evaluate" in w for w in post(hook.admission_port, review_body())[
        1]["response"]["warnings"])


def evaluated(out: list[Any]) -> None:
    (status, doc), = out
    assert status == 200
    warnings = doc["response"]["warnings"]
    assert "MT2001" in json.dumps(warnings) and not any("could not evaluate" in w
                                                          for w in warnings), warnings


def test_pipelined_reviews_share_the_deadline_from_when_they_were_read(
        hook: Webhook) -> None:
    """Reviews pipelined behind one that waits get the failure policy at their own
    deadline, counted from when they were read, not each a whole timeout later."""
    body = review_body()
    with holding_the_worker(hook), \
            socket.create_connection(("127.0.0.1", hook.admission_port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(pipelined(body, body, body))
        # The first at its deadline, the others at once: theirs has passed too.
        for _, doc in read_answers(sock, 3):
            assert "could not evaluate" in json.dumps(doc)
        took = time.monotonic() - started
    assert took < 2 * TIMEOUT, f"three pipelined reviews took {took:.2f}s"


def test_a_worker_returned_after_the_loop_ended_wakes_nothing(hook: Webhook) -> None:
    """Once stopped, the loop's wake-up pipe is closed (and its number may be
    reused): a worker returned later must not write to it."""
    engine = hook.engine
    assert isinstance(engine, EmbeddedEngine) and engine.pool.on_idle is not None
    hook.stop(flush_seconds=1)
    engine.pool.on_idle()  # raised EBADF, or wrote into a reused descriptor


def test_a_worker_returned_by_another_thread_goes_to_the_waiting_reviews(
        hook: Webhook) -> None:
    inloop = inloop_of(hook)
    with holding_the_worker(hook):
        threads = [in_background(lambda: post(hook.admission_port, review_body()))
                   for _ in range(3)]
        eventually(lambda: inloop.queued == 3, timeout=10,
                   what="three reviews waiting for the worker")
    for thread, out in threads:
        thread.join(TIMEOUT + 5)
        evaluated(out)


def post_chunked(port: int, body: bytes) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", iter([body[:1000], body[1000:]]),
                     {"Content-Type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("send", [post, post_chunked], ids=["content-length", "chunked"])
def test_a_large_review_takes_a_task_thread_and_is_served_too(
        hook: Webhook, send: Callable[[int, bytes], tuple[int, dict[str, Any]]]) -> None:
    """Over 64 KiB a review is the task threads' (the pool's large-object rule),
    however its body was framed; a thread waiting for a worker is served before the
    loop's reviews."""
    inloop = inloop_of(hook)
    big = dict(DEPLOYMENT, metadata={**DEPLOYMENT["metadata"],
                                     "annotations": {"filler": "x" * 70_000}})
    with holding_the_worker(hook):
        large, large_out = in_background(lambda: send(hook.admission_port, review_body(big)))
        small, small_out = in_background(lambda: post(hook.admission_port, review_body()))
        eventually(lambda: inloop.queued == 1, timeout=10,
                   what="the small review waiting in the loop")
        assert inloop.in_flight == 1  # the large one is not the loop's
    large.join(TIMEOUT + 5)
    small.join(TIMEOUT + 5)
    evaluated(large_out)
    evaluated(small_out)


def test_a_client_gone_mid_evaluation_costs_nothing_else(hook: Webhook) -> None:
    inloop = inloop_of(hook)
    body = review_body()
    with holding_the_worker(hook), \
            socket.create_connection(("127.0.0.1", hook.admission_port), timeout=5) as sock:
        sock.sendall(pipelined(body))
        eventually(lambda: inloop.queued == 1, timeout=10, what="the review waiting")
    eventually(lambda: inloop.in_flight == 0, timeout=10, what="the review served")
    status, doc = post(hook.admission_port, review_body())
    assert status == 200 and doc["response"]["allowed"] is False


def test_stopping_waits_for_the_reviews_in_the_loop(hook: Webhook) -> None:
    inloop = inloop_of(hook)
    with holding_the_worker(hook):
        client, out = in_background(lambda: post(hook.admission_port, review_body()))
        eventually(lambda: inloop.queued == 1, timeout=10, what="the review waiting")
        stopper, _ = in_background(lambda: hook.stop(flush_seconds=5))
    client.join(10)
    stopper.join(10)
    evaluated(out)


def test_answers_from_the_loop_are_counted(hook: Webhook) -> None:
    post(hook.admission_port, review_body())
    post(hook.admission_port, b"{")
    conn = http.client.HTTPConnection("127.0.0.1", hook.metrics_port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'magtape_http_responses_total{code="200"} 1.0' in text
    assert 'magtape_http_responses_total{code="400"} 1.0' in text


SLOWISH = """package kubernetes.admission.slowish
import rego.v1
policy_metadata := {"name": "slowish", "severity": "LOW", "errcode": "MT9407",
  "targets": {"Pod"}}
matches if input.request.kind.kind in policy_metadata.targets

deny contains {"msg": sprintf("[FAIL] LOW - %d (MT9407)", [n])} if {
  input.request.object.metadata.labels.slow == "yes"
  n := count([x | some x in numbers.range(1, 700); some y in numbers.range(1, 700); x * y == -1])
}
"""


@pytest.fixture
def slow_hook(tmp_path: Path) -> Iterator[Webhook]:
    """One worker, a 1 s deadline, and a policy that takes ~0.2 s on Pods labelled slow."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "custom").mkdir()
    (policies / "custom" / "slowish.rego").write_text(SLOWISH)
    free = Address("127.0.0.1", 0)
    webhook = start(Settings(http=HttpSettings(listen=free, metrics_listen=free),
                             engine=EngineSettings(policy_dirs=(str(policies),), workers=1,
                                                   timeout_seconds=TIMEOUT,
                                                   failure_policy=FailurePolicy.FAIL),
                             notify=NotifySettings(events_enabled=False)))
    yield webhook
    webhook.stop(flush_seconds=2)


def slow_pod() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "test1", "labels": {"slow": "yes"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def test_an_overload_of_slow_reviews_does_not_kill_the_worker(slow_hook: Webhook) -> None:
    """More slow reviews at once than one worker evaluates by their deadline: those it
    cannot answer in time get the failure policy at their deadline, and the worker,
    left to finish (it is no runaway), serves again instead of being killed and
    restarted, which in an overload would take capacity away when it is needed."""
    port = slow_hook.admission_port
    started = time.monotonic()
    assert "MT9407" in json.dumps(post(port, review_body(slow_pod()))[1])
    each = time.monotonic() - started
    workers = set(procs.children(os.getpid(), "magtape.engine.worker"))
    count = math.ceil(TIMEOUT / each) + 2
    def timed() -> tuple[float, str]:
        sent = time.monotonic()
        _, doc = post(port, review_body(slow_pod()))
        return time.monotonic() - sent, json.dumps(doc["response"])

    threads = [in_background(timed) for _ in range(count)]
    answers = []
    for thread, out in threads:
        thread.join(TIMEOUT + 5)
        answers += out
    late = [text for _, text in answers if "the worker goes on" in text]
    assert late, f"no review outlived its deadline while evaluated ({count} of {each:.2f}s)"
    assert len(answers) == count and all(took < TIMEOUT + 0.5 for took, _ in answers), answers
    # The worker finished the late evaluations and serves; none was killed.
    assert "MT9407" in json.dumps(post(port, review_body(slow_pod()))[1])
    assert set(procs.children(os.getpid(), "magtape.engine.worker")) == workers
