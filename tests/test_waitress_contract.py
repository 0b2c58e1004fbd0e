"""The waitress internals magtape.listeners relies on, checked by name.

Why it exists: listeners.py subclasses waitress' task, channel and server
classes (one-send responses, JSON error pages, the request-read deadline, the
writable rule, SO_REUSEPORT), which are not public API. pyproject.toml pins
waitress to one minor version; when `make lock` moves it, these tests say
exactly which of the attributes and methods we override or read has changed,
instead of a subtle failure under load.
"""

from __future__ import annotations

import inspect
from importlib import metadata

import pytest
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, Task

from magtape.listeners import (
    BoundedServer,
    DeadlineChannel,
    JsonErrorTask,
    ListenerLimits,
    _task_for,
    create_bounded_server,
)


def test_the_minor_version_is_the_one_pinned() -> None:
    assert metadata.version("waitress").startswith("3.0."), (
        "waitress moved past 3.0: re-check magtape/listeners.py against its source, then "
        "widen the pin in pyproject.toml and the checks below")


# (class, name, what listeners.py does with it)
OVERRIDDEN = [
    (Task, "write", "_OneSend.write sends header and whole body in one write (both our tasks)"),
    (ErrorTask, "execute", "JsonErrorTask.execute writes a JSON body"),
    (HTTPChannel, "received", "DeadlineChannel.received stamps when reading began"),
    (HTTPChannel, "writable", "DeadlineChannel.writable stops the poll loop spinning"),
    (TcpWSGIServer, "maintenance", "BoundedServer.maintenance closes slow readers"),
    (TcpWSGIServer, "set_reuse_addr", "SharedPortServer sets SO_REUSEPORT before bind"),
    (TcpWSGIServer, "add_task", "BoundedServer.add_task offers a request to the loop first"),
    (TcpWSGIServer, "pull_trigger", "BoundedServer.pull_trigger skips it in the loop thread"),
    (TcpWSGIServer, "run", "BoundedServer.run runs the in-loop scheduler's loop"),
    (Task, "service", "LoopTask is served by Task.service: start, execute (ours), finish"),
]


@pytest.mark.parametrize(("cls", "name", "why"), OVERRIDDEN,
                         ids=[f"{c.__name__}.{n}" for c, n, _ in OVERRIDDEN])
def test_overridden_methods_still_exist(cls: type, name: str, why: str) -> None:
    assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name} is gone ({why})"


# Attributes read or set by our overrides, and where waitress defines them.
READ = [
    (Task, ["wrote_header", "complete", "has_body", "chunked_response", "content_length",
            "content_bytes_written", "build_response_header", "set_close_on_finish",
            "response_headers", "channel", "status", "request"]),
    (HTTPChannel, ["will_close", "close_when_flushed", "requests", "total_outbufs_len",
                   "write_soon", "request", "adj", "service"]),
    (TcpWSGIServer, ["active_channels", "trigger", "task_dispatcher", "adj"]),
    (HTTPRequestParser, ["command", "path", "content_length", "error", "get_body_stream"]),
]


def test_the_loop_magtape_inloop_runs_is_waitress_own() -> None:
    """InLoop.run drives waitress' poll2 over the server's map (with the readiness
    and close callbacks _PipeWatch answers); channel.service() offers a pipelined
    request through server.add_task and ends with server.pull_trigger() under the
    requests_lock that received() also holds while calling add_task."""
    poll2 = inspect.getsource(wasyncore.poll2) + inspect.getsource(wasyncore.readwrite)
    for name in ("readable()", "writable()", "accepting", "handle_read_event",
                 "handle_write_event", "handle_expt_event", "handle_close"):
        assert name in poll2, name
    service = inspect.getsource(HTTPChannel.service)
    assert "self.server.add_task(self)" in service and "self.server.pull_trigger()" in service
    received = inspect.getsource(HTTPChannel.received)
    assert "with self.requests_lock:" in received and "self.server.add_task(self)" in received
    assert "asyncore_loop_timeout" in inspect.getsource(TcpWSGIServer.__mro__[1].run)


@pytest.mark.parametrize(("cls", "names"), READ, ids=[c.__name__ for c, _ in READ])
def test_attributes_our_overrides_use_are_still_waitress_own(cls: type, names: list[str]
                                                             ) -> None:
    source = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__ != "builtins"
                     and c.__module__.startswith("waitress"))
    for name in names:
        assert f"self.{name}" in source or f"def {name}" in source or hasattr(cls, name), (
            f"waitress' {cls.__name__} no longer has {name}: magtape/listeners.py uses it")


def test_the_hooks_that_select_our_classes_are_still_read() -> None:
    """waitress picks the task, error task and channel classes through these attributes."""
    channel_source = inspect.getsource(HTTPChannel)
    assert "self.task_class" in channel_source and "self.error_task_class" in channel_source
    assert "self.channel_class" in inspect.getsource(TcpWSGIServer.__mro__[1])
    assert DeadlineChannel.task_class is _task_for
    assert DeadlineChannel.error_task_class is JsonErrorTask
    assert BoundedServer.channel_class is DeadlineChannel
    assert "outbuf_high_watermark" in inspect.getsource(HTTPChannel)


def test_the_application_is_served_without_the_proxy_header_middleware() -> None:
    """MagTape reads no X-Forwarded-* header, so waitress must not wrap the app in
    its proxy-header middleware (a pass over every request's headers). The server
    keeps the application as given only while clear_untrusted_proxy_headers is off."""

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    server = create_bounded_server(app, "127.0.0.1", 0, ListenerLimits(threads=1), "test")
    try:
        assert server.application is app
    finally:
        server.close()
