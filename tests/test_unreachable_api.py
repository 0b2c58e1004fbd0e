"""With the API server unreachable, MagTape says so once per back-off step, and why.

Before: urllib3 retried every refused connection three times, logging
``Retrying (Retry(total=2, ...))`` for each (81 of 108 warnings in 25 s), and
``magtape init`` answered every failure with "check the RBAC ... if this is
403". These tests use real sockets: a closed port (connection refused) and a
listener that hangs up on every connection (counting them), plus the fake API
server for an RBAC refusal.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient, Configuration

from fakekube import FakeKube
from magtape.background import Backoff
from magtape.kube.init import run_init
from magtape.kube.reflector import Reflector
from magtape.kube.rest import NAMESPACES, KubeError, RawApi
from magtape.settings import Settings
from waiting import eventually

SETTINGS = Settings().with_overrides(identity={"namespace": "magtape-system"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


class HangUp:
    """Accepts connections and closes them at once; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hang_up() -> Iterator[HangUp]:
    server = HangUp()
    yield server
    server.close()


def client(port: int) -> ApiClient:
    return ApiClient(Configuration(host=f"http://127.0.0.1:{port}"))


def test_a_refused_connection_is_tried_once_and_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(KubeError) as raised:
        RawApi(client(closed_port())).list(NAMESPACES)
    assert raised.value.status == 0
    assert "is unreachable (connection refused): GET /api/v1/namespaces" in str(raised.value)
    assert not [r for r in caplog.records if r.name.startswith("urllib3")
                and r.levelno >= logging.WARNING], caplog.text


def test_no_request_is_retried_by_urllib3(hang_up: HangUp,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(KubeError):
        RawApi(client(hang_up.port)).list(NAMESPACES)
    assert hang_up.accepted == 1
    assert "Retrying" not in caplog.text


def test_a_reflector_logs_once_per_back_off_step(hang_up: HangUp,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    class Ignore:
        def replace(self, objects: list[dict[str, object]]) -> None: ...

        def apply(self, event_type: str, obj: dict[str, object]) -> None: ...

    reflector = Reflector(RawApi(client(hang_up.port)), NAMESPACES, Ignore(),
                          backoff=Backoff(0.05, 0.2))
    with caplog.at_level(logging.WARNING):
        reflector.start()
        try:
            assert eventually(lambda: hang_up.accepted >= 5, 20)
        finally:
            reflector.stop()
    steps = [r for r in caplog.records if "list/watch of v1/namespaces failed" in r.message]
    # One warning per attempt (the last attempt may not have logged yet), none from urllib3.
    assert hang_up.accepted - 1 <= len(steps) <= hang_up.accepted, caplog.text
    assert all("is unreachable" in r.message and "retrying in" in r.message for r in steps)
    assert not [r for r in caplog.records if r.name.startswith("urllib3")], caplog.text


def test_init_names_connection_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, client(closed_port())) == 1
    assert "connection refused" in caplog.text
    assert "check the API server address and the network" in caplog.text
    assert "RBAC" not in caplog.text and "permission" not in caplog.text


def test_init_names_missing_rbac(fake_kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    fake_kube.fail(403, message='secrets "magtape-tls" is forbidden')
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, fake_kube.api_client()) == 1
    assert "403" in caplog.text
    assert "the ServiceAccount magtape-init lacks a permission" in caplog.text
    assert "base/rbac-init.yaml" in caplog.text
    assert "unreachable" not in caplog.text
