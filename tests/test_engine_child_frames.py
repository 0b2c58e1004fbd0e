"""The engine client reads every answer whole, however the child writes it.

Why it exists: :meth:`Child.call` waits once and reads an ordinary answer in
one ``read`` (docs/performance.md); these tests keep the other cases right:
a header split over writes, an answer larger than one read, a large request
(the child reads through a buffer), and a child that answers twice (a
defect: the child is killed and the call fails as a crash, never a verdict).
A real child process (tests/framechild.py) writes the bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from magtape.engine.child import Child, ChildDied

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def child(monkeypatch: pytest.MonkeyPatch) -> Iterator[Child]:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))
    c = Child("framechild", 0)
    yield c
    c.kill()


def test_a_split_header_and_a_large_request_are_read_whole(child: Child) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, larger than the child's read buffer
    answer = child.call(b"S", payload, 30)
    assert (answer.op, answer.payload) == (b"K", payload)
    assert child.call(b"E", b"again", 30).payload == b"again"  # the stream stays in step


def test_an_answer_larger_than_one_read_is_read_whole(child: Child) -> None:
    answer = child.call(b"B", b"", 30)
    assert answer.op == b"K" and len(answer.payload) == 3 << 20
    assert child.call(b"E", b"next", 30).payload == b"next"


def test_two_answers_to_one_request_kill_the_child(child: Child) -> None:
    with pytest.raises(ChildDied) as failed:
        child.call(b"2", b"", 30)
    assert failed.value.failure == "crash"
    assert child.dead
