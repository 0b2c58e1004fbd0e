"""``magtape serve`` with ``MAGTAPE_AUDIT=on``, as server.start wires it, two replicas in-process.

Against the shared fake API server: one replica leads and writes the
report, the other stands by with no audit engine (counted in /proc: only the
leader has a niced worker); when the leader stops, the standby takes over.
The real-API-server version of this is tests/e2e/test_audit_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from enforcementsupport import container, pod
from fakekube import FakeKube
from magtape.audit.capacity import LOWEST_PRIORITY
from magtape.server import Webhook, start
from magtape.settings import (
    Address,
    AuditMode,
    AuditSettings,
    EngineSettings,
    HttpSettings,
    NotifySettings,
    Settings,
)
from test_audit_capacity import engine_workers
from test_audit_controller import namespace, register, results_of
from waiting import eventually

LOCAL = Address("127.0.0.1", 0)


@pytest.fixture
def hooks() -> Iterator[list[tuple[Webhook, CollectorRegistry]]]:
    started: list[tuple[Webhook, CollectorRegistry]] = []
    yield started
    for hook, _ in started:
        hook.stop(1.0)


def leader(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("magtape_audit_leader")


def test_two_replicas_one_writer_and_a_hand_over(fake_kube: FakeKube,
                                                 hooks: list[tuple[Webhook, CollectorRegistry]]
                                                 ) -> None:
    register(fake_kube)
    fake_kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)))
    settings = Settings(audit=AuditSettings(mode=AuditMode.ON, lease_seconds=2.0),
                        http=HttpSettings(listen=LOCAL, metrics_listen=LOCAL),
                        engine=EngineSettings(workers=1),
                        notify=NotifySettings(events_enabled=False))
    for _ in range(2):
        registry = CollectorRegistry()
        hooks.append((start(settings, registry, fake_kube.api_client()), registry))
    eventually(lambda: results_of(fake_kube, "team-a") == {("agent", "MT2001", "fail")}, 60,
               "the leader's report")
    eventually(lambda: sorted(leader(r) or 0.0 for _, r in hooks) == [0.0, 1.0], 30,
               "one leader, one standby")
    niced = [pid for pid, nice in engine_workers().items() if nice == LOWEST_PRIORITY]
    assert len(niced) == 1, niced  # the leader's audit worker; the standby has none

    first = next(i for i, (_, r) in enumerate(hooks) if leader(r) == 1.0)
    hook, _ = hooks.pop(first)
    hook.stop(1.0)  # releases the Lease
    (_, standby), = hooks
    eventually(lambda: leader(standby) == 1.0, 30, "the standby to take over")
    fake_kube.seed(pod("agent"))  # fixed: the new leader follows it
    eventually(lambda: results_of(fake_kube, "team-a") == set(), 60,
               "the new leader to remove the fixed Pod's result")
