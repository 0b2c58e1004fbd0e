"""The listener's main loop leaves a channel alone while its task thread writes.

Why it exists: waitress' main loop polled a channel for writing whenever any
byte of a response was buffered, and spun (poll, fail to take the output
lock, poll again) while the task thread was sending, ~34 passes per admission
request (docs/performance.md). :meth:`DeadlineChannel.writable` now says no
while a request is served, except when closing or above the high watermark.
These tests pin that rule on a real channel and show that responses of every
size still arrive whole: larger than the socket buffers (the loop sends the
rest once the task ends) and larger than the high watermark (the task waits
for the loop to drain it). A body written whole goes out with its header in
one send (:class:`OneSendTask`); other shapes are waitress' own.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

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


# ------------------------------------------------- header and body in one send

class CountingChannel(DeadlineChannel):
    """Counts the channel's socket sends (waitress' own ``send``)."""

    sends: ClassVar[list[int]] = []

    def send(self, data: bytes, do_close: bool = True) -> int:
        CountingChannel.sends.append(len(data))
        sent: int = super().send(data, do_close=do_close)
        return sent


def _shapes(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``/whole``: one body with its length; ``/parts``: two chunks, no length;
    ``/empty``: 204."""
    path = environ["PATH_INFO"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/parts":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"first,", b"second"])
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")])
    return [b'{"ok":true}']


@pytest.fixture
def counting() -> Iterator[Any]:
    srv = create_bounded_server(_shapes, "127.0.0.1", 0, ListenerLimits(threads=2), "test")
    srv.channel_class = CountingChannel
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv
    stop_waitress(srv, thread, 5.0)


def test_a_whole_body_goes_out_with_its_header_in_one_send(counting: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", counting.effective_port, timeout=10)
    try:
        for path, status, body in [("/whole", 200, b'{"ok":true}'), ("/empty", 204, b""),
                                   ("/parts", 200, b"first,second"),
                                   ("/whole", 200, b'{"ok":true}')]:
            CountingChannel.sends.clear()
            conn.request("GET", path)
            response = conn.getresponse()
            assert (response.status, response.read()) == (status, body), path
            if path == "/whole":
                assert len(CountingChannel.sends) == 1, CountingChannel.sends
                assert response.getheader("Content-Length") == "11"
    finally:
        conn.close()


def test_a_listener_whose_wake_up_pipe_is_gone_still_stops() -> None:
    srv = create_bounded_server(_shapes, "127.0.0.1", 0, ListenerLimits(threads=1), "test")
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    closed = threading.Event()

    def close_trigger() -> None:  # runs in waitress' loop, as its own error path would
        srv.trigger.close()
        closed.set()

    srv.trigger.pull_trigger(close_trigger)
    assert closed.wait(5)
    stop_waitress(srv, thread, 5.0)
    assert not thread.is_alive()
