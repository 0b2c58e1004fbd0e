"""The listener's main loop leaves a channel alone while its task thread writes.

Why it exists: waitress' main loop polled a channel for writing whenever any
byte of a response was buffered, and spun (poll, fail to take the output
lock, poll again) while the task thread was sending, ~34 passes per admission
request (docs/performance.md). :meth:`DeadlineChannel.writable` now says no
while a request is served, except when closing or above the high watermark.
These tests pin that rule on a real channel and show that responses of every
size still arrive whole: larger than the socket buffers (the loop sends the
rest once the task ends) and larger than the high watermark (the task waits
for the loop to drain it).
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from magtape.listeners import DeadlineChannel, ListenerLimits, create_bounded_server
from magtape.server import stop_waitress

CHUNK = b"x" * 65536


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answers ``/<n>`` with n chunks of 64 KiB."""
    chunks = int(environ["PATH_INFO"].strip("/"))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(chunks * len(CHUNK)))])
    return (CHUNK for _ in range(chunks))


@pytest.fixture
def server() -> Iterator[Any]:
    srv = create_bounded_server(_app, "127.0.0.1", 0, ListenerLimits(threads=2), "test")
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv
    stop_waitress(srv, thread, 5.0)


def _channel(srv: Any) -> tuple[DeadlineChannel, socket.socket]:
    a, b = socket.socketpair()
    return DeadlineChannel(srv, a, ("127.0.0.1", 1), srv.adj, map={}), b


def test_a_channel_serving_a_request_is_not_polled_for_writing(server: Any) -> None:
    channel, peer = _channel(server)
    try:
        channel.total_outbufs_len = 127  # a response header being sent by the task thread
        channel.requests = [object()]
        assert not channel.writable()
        channel.requests = []  # the task ended: the loop sends what is left
        assert channel.writable()
        channel.requests = [object()]
        channel.total_outbufs_len = server.adj.outbuf_high_watermark + 1  # task waits for us
        assert channel.writable()
        channel.total_outbufs_len = 0
        channel.will_close = True  # maintenance closing a trickling client
        assert channel.writable()
    finally:
        channel.total_outbufs_len = 0
        channel.requests = []
        channel.close()
        peer.close()


@pytest.mark.parametrize("chunks", [1, 64, 300])  # 64 KiB, 4 MiB, ~19 MiB (> watermark)
def test_responses_of_every_size_arrive_whole(server: Any, chunks: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=30)
    try:
        for _ in range(2):  # the same keep-alive connection, twice
            conn.request("GET", f"/{chunks}")
            response = conn.getresponse()
            assert response.status == 200
            assert len(response.read()) == chunks * len(CHUNK)
    finally:
        conn.close()
