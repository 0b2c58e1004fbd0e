"""``eventually``: wait for a condition a test cannot be told about directly.

Polls the predicate (20 ms apart) until it is truthy or the timeout passes;
the timeout fails the test with what was awaited. Used where the code under
test offers no hook (a worker process replaced, data reaching the engine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def eventually(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    """The first truthy value of ``predicate()``; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        pause.wait(0.02)
    return value
