"""The audit's own engine: separate worker processes at the lowest CPU priority, in step with
admission's policy set through the Mirror.

Worker processes are found in /proc (children of this test process running
the engine worker module), so the niceness checked is the kernel's, not a
value the code reports about itself.
"""

from __future__ import annotations

import os

import pytest

import procs
from enforcementsupport import container, pod
from magtape.audit.capacity import LOWEST_PRIORITY, AuditEngine, Mirror
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.pool import WORKER_MODULE
from magtape.engine.sources import builtin_modules
from magtape.review import make_review
from magtape.settings import AuditSettings, EngineSettings, Settings
from waiting import eventually


def engine_workers() -> dict[int, int]:
    """pid -> nice value of this process's engine worker children."""
    return {pid: int(fields[16])
            for pid, fields in procs.children(os.getpid(), WORKER_MODULE).items()}


def test_the_audit_engine_has_its_own_niced_workers_fed_through_the_mirror() -> None:
    admission = EmbeddedEngine(timeout_seconds=10, workers=1)
    audit = AuditEngine(Settings(audit=AuditSettings(workers=1),
                                 engine=EngineSettings(timeout_seconds=10)))
    try:
        mirror = Mirror(admission)
        report = mirror.load(builtin_modules(), {})
        mirror.attach(audit)  # as on becoming the leader: starts from the current set
        assert report.policies and not report.errors
        eventually(lambda: audit.ready and audit.generation == 1, 60,
                   "the audit's engine to load the mirrored set")
        review = make_review(pod("agent", container("a", privileged=True)), "team-a")
        assert audit.evaluate(review).violations == admission.evaluate(review).violations
        workers = engine_workers()  # other tests' engines may have workers too (at 0)
        assert sorted(workers.values()).count(LOWEST_PRIORITY) == 1, workers  # the audit's
        assert 0 in workers.values(), workers  # admission's stays at normal priority
        mirror.update_data({"kubernetes": {"namespaces": {}}})
        eventually(lambda: audit.data_generation == 1, 30, "the mirrored data update")
        assert audit.generation == 1  # data alone is not a new policy set
    finally:
        audit.close()
        admission.close()


def test_a_load_the_audit_engine_cannot_take_is_not_a_new_generation(
        caplog: pytest.LogCaptureFixture) -> None:
    """A failed take changes nothing in the audit's engine, so no full pass is started
    over every object with the set it already had."""
    audit = AuditEngine(Settings(audit=AuditSettings(workers=1),
                                 engine=EngineSettings(timeout_seconds=10)))
    try:
        audit.submit_policies(builtin_modules(), {})
        eventually(lambda: audit.ready and audit.generation == 1, 60, "the first set")
        audit.submit_data({"unserializable": {1, 2}})  # a set is not JSON: the take fails
        eventually(lambda: "could not take" in caplog.text, 30, "the failed take")
        assert (audit.generation, audit.data_generation) == (1, 0)
        audit.submit_data({"kubernetes": {"namespaces": {}}})
        eventually(lambda: audit.data_generation == 1, 30, "the next good update")
    finally:
        audit.close()
