"""The embedded engine's containment, on real worker processes.

Every test here runs regorus in the pool's real child processes and checks
what an operator relies on: a runaway evaluation is killed at the deadline and
its capacity comes back, a memory bomb hits the cap and not the webhook, a
worker killed from outside is replaced without failing a request, a slow
policy is reported by vetting and never holds up data updates, a policy's
runtime error or malformed output is that policy's alone, and cluster data
changes decisions without a new policy set.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procs
from magtape.engine import REQUEST_DEADLINE, EngineError
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.store import PolicyStore
from magtape.policy import PolicyModule, Severity
from magtape.review import make_review
from waiting import eventually


def policy(name: str, body: str, severity: str = "LOW", errcode: str = "MT9000",
           kinds: str = '"Pod"') -> PolicyModule:
    """A policy module ``kubernetes.admission.<name>`` with metadata and ``body``."""
    package = name.replace("-", "_")
    return PolicyModule(f"configmap magtape-system/{name}", f"{name}.rego",
                        f"package kubernetes.admission.{package}\nimport rego.v1\n"
                        f'policy_metadata := {{"name": "{name}", "severity": "{severity}", '
                        f'"errcode": "{errcode}", "targets": {{{kinds}}}}}\n'
                        + ("" if body.startswith("matches ") else MATCHES)
                        + f"{body}\n")


# Every policy defines `matches` (vetting rejects one that does not).
MATCHES = "matches if input.request.kind.kind in policy_metadata.targets\n"


# Fails every Pod labelled fail=yes: the "other policy" whose verdict must survive.
LABELLED = policy("labelled", 'deny contains {"msg": "[FAIL] LOW - labelled (MT9001)"} if '
                  'input.request.object.metadata.labels.fail == "yes"', errcode="MT9001")
# Burns CPU for as long as it is allowed to when the Pod is labelled slow=yes.
SLOW_ON_LABEL = policy("slow", 'deny contains {"msg": sprintf("%d", [n])} if {\n'
                       '  input.request.object.metadata.labels.slow == "yes"\n'
                       '  n := count([x | some x in numbers.range(1, 20000); some y in '
                       'numbers.range(1, 20000); x * y == -1])\n}',
                       errcode="MT9002")
# A few milliseconds of work on every Pod (10,000 pairs, ~4 ms here): more than 1 ms,
# far less than MIN_CALL_SECONDS.
FEW_MS = policy("few-ms", 'deny contains {"msg": sprintf("[FAIL] LOW - %d (MT9006)", [n])} if {\n'
                '  n := count([x | some x in numbers.range(1, 100); some y in '
                'numbers.range(1, 100); x * y == -1])\n}', errcode="MT9006")
# A 1.2M-element collection (of strings: more memory than the cap allows).
BOMB_ON_LABEL = policy("bomb", 'deny contains {"msg": sprintf("%d", [n])} if {\n'
                       '  input.request.object.metadata.labels.bomb == "yes"\n'
                       '  n := count({sprintf("item-%d", [y]) | some y in '
                       "numbers.range(1, 1200000)})\n}", errcode="MT9003")
# Slow on every input, the minimal one used by vetting included.
ALWAYS_SLOW = policy("always-slow", 'deny contains {"msg": sprintf("%d", [n])} if {\n'
                     '  n := count([x | some x in numbers.range(1, 20000); some y in '
                     'numbers.range(1, 20000); x * y == -1])\n'
                     "}", errcode="MT9004")
# MT2002-like: reads replicated namespaces from data.
NAMESPACE_FLAG = policy("namespace-flag", 'deny contains {"msg": "[FAIL] LOW - flagged (MT9005)"}'
                        " if {\n  ns := data.kubernetes.namespaces[input.request.namespace]\n"
                        '  ns.metadata.annotations.flag == "on"\n}', errcode="MT9005")


def pod(**labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "team-a", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def errcodes(engine: EmbeddedEngine, obj: dict[str, Any]) -> list[str]:
    return [v.errcode for v in engine.evaluate(make_review(obj)).violations]


def worker_pids(engine: EmbeddedEngine) -> set[int]:
    """The worker processes of ``engine``: children running magtape.engine.worker that
    were not there when the test started (other tests' engines may still be alive)."""
    return _all_worker_pids() - _preexisting


_preexisting: set[int] = set()


@pytest.fixture(autouse=True)
def _note_preexisting_workers() -> None:
    global _preexisting
    _preexisting = _all_worker_pids()


def _all_worker_pids() -> set[int]:
    return set(procs.children(os.getpid(), "magtape.engine.worker"))


@pytest.fixture
def make_engine() -> Iterator[Callable[..., EmbeddedEngine]]:
    engines: list[EmbeddedEngine] = []

    def factory(*modules: PolicyModule, **options: Any) -> EmbeddedEngine:
        engine = EmbeddedEngine(**options)
        engines.append(engine)
        report = engine.load(list(modules), {})
        assert not report.errors, report.errors
        return engine

    yield factory
    for engine in engines:
        engine.close()


def test_a_runaway_evaluation_is_killed_at_the_deadline_and_capacity_returns(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = make_engine(LABELLED, SLOW_ON_LABEL, timeout_seconds=0.5, workers=2)
    before = eventually(lambda: (p := worker_pids(engine)) and len(p) == 2 and p,
                        what="both workers")
    with pytest.raises(EngineError) as caught:
        engine.evaluate(make_review(pod(slow="yes")))
    assert caught.value.reason == "timeout"
    assert "timed out after 0.5s" in str(caught.value)
    # The other worker answers at once; the killed one is replaced.
    assert errcodes(engine, pod(fail="yes")) == ["MT9001"]
    after = eventually(lambda: (p := worker_pids(engine)) and len(p) == 2 and p, what="2 workers")
    assert len(before - after) == 1, "exactly the runaway worker was replaced"


def test_a_worker_taken_just_before_the_deadline_answers_instead_of_being_killed(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    """Under overload a request may get a worker with a millisecond left: the worker
    gets MIN_CALL_SECONDS to answer, so overload does not kill and restart workers."""
    engine = make_engine(FEW_MS, timeout_seconds=2, workers=1)
    before = eventually(lambda: worker_pids(engine), what="the worker")
    started = time.monotonic()
    assert errcodes(engine, pod()) == ["MT9006"]
    assert time.monotonic() - started > 0.001  # longer than the old 1 ms a call had
    for _ in range(3):
        token = REQUEST_DEADLINE.set(time.monotonic() + 0.0003)
        try:
            assert errcodes(engine, pod()) == ["MT9006"]
        finally:
            REQUEST_DEADLINE.reset(token)
    assert worker_pids(engine) == before


# ~0.2 s of work on Pods labelled slowish=yes: longer than MIN_CALL_SECONDS.
SLOWISH_ON_LABEL = policy("slowish", 'deny contains {"msg": sprintf("[FAIL] LOW - %d (MT9007)", '
                          '[n])} if {\n  input.request.object.metadata.labels.slowish == "yes"\n'
                          '  n := count([x | some x in numbers.range(1, 700); some y in '
                          'numbers.range(1, 700); x * y == -1])\n}', errcode="MT9007")


def test_a_worker_whose_request_gave_up_finishes_and_serves_again(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    """A request that got its worker late gives up at its deadline; the worker is no
    runaway (the engine's timeout from when it got the request has not passed), so it
    finishes, its answer is dropped, and it serves the next request: not killed."""
    engine = make_engine(LABELLED, SLOWISH_ON_LABEL, timeout_seconds=2, workers=1)
    before = eventually(lambda: worker_pids(engine), what="the worker")
    token = REQUEST_DEADLINE.set(time.monotonic() + 0.05)
    try:
        with pytest.raises(EngineError) as caught:
            engine.evaluate(make_review(pod(slowish="yes")))
    finally:
        REQUEST_DEADLINE.reset(token)
    assert caught.value.reason == "timeout" and "the worker goes on" in str(caught.value)
    assert errcodes(engine, pod(fail="yes")) == ["MT9001"]  # waits for the late answer
    assert worker_pids(engine) == before


def test_a_memory_bomb_hits_the_cap_and_the_engine_keeps_answering(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = make_engine(LABELLED, BOMB_ON_LABEL, timeout_seconds=10, workers=1,
                         memory_mb=160)
    with pytest.raises(EngineError) as caught:
        engine.evaluate(make_review(pod(bomb="yes")))
    assert caught.value.reason == "memory", caught.value
    # The only worker died; the next request waits for its replacement.
    assert errcodes(engine, pod(fail="yes")) == ["MT9001"]


def test_a_worker_killed_from_outside_is_replaced_without_failing_a_request(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = make_engine(LABELLED, timeout_seconds=5, workers=2)
    victim = min(eventually(lambda: (p := worker_pids(engine)) and len(p) == 2 and p,
                            what="both workers"))
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: victim not in worker_pids(engine) or not procs.alive(victim),
               what="the worker to die")
    for _ in range(4):  # both workers are borrowed at least once
        assert errcodes(engine, pod(fail="yes")) == ["MT9001"]
    eventually(lambda: len(worker_pids(engine) - {victim}) == 2, what="a replacement")


def test_close_ends_every_worker(make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = make_engine(LABELLED, workers=2)
    assert engine.ready
    eventually(lambda: len(worker_pids(engine)) == 2, what="both workers")
    engine.close()
    assert not engine.ready
    assert worker_pids(engine) == set()
    with pytest.raises(EngineError) as caught:
        engine.evaluate(make_review(pod()))
    assert caught.value.reason == "unavailable"


def test_a_runtime_error_is_that_policys_alone(make_engine: Callable[..., EmbeddedEngine]) -> None:
    to_number = policy("to-number", 'deny contains {"msg": "[FAIL] HIGH - big (MT9006)"} if '
                       "to_number(input.request.object.metadata.labels.n) > 1",
                       severity="HIGH", errcode="MT9006")
    engine = make_engine(LABELLED, to_number)
    evaluation = engine.evaluate(make_review(pod(fail="yes", n="1e400x")))
    assert [v.errcode for v in evaluation.violations] == ["MT9001"]
    (error,) = evaluation.policy_errors
    assert (error.policy, error.errcode, error.severity) == ("to-number", "MT9006",
                                                             Severity.HIGH)
    assert "to-number.rego:5" in error.message  # the line of the failing deny
    # The same policy decides normally where it does not fail.
    assert [v.errcode for v in engine.evaluate(make_review(pod(n="5"))).violations] == ["MT9006"]


MALFORMED = [
    # deny body, what the error says, violations kept
    ("deny contains 42 if true", "an item is a number", []),
    ('deny contains {"msg": 1} if true', "msg is a number", []),
    ('deny contains {"text": "x"} if true', "msg is null", []),
    ('deny contains {"msg": "x", "severity": "LOW"} if true', "claims severity 'LOW'", []),
    ('deny contains {"msg": "x", "errcode": "MT0000"} if true', "claims errcode 'MT0000'", []),
    ('deny contains {"msg": "x", "details": [1]} if true', "details is an array", []),
    ('deny contains {"msg": "ok"} if true\ndeny contains 7 if true', "an item is a number",
     ["ok"]),
    ('deny := "not a set"', "deny must be a set", []),
]


@pytest.mark.parametrize("body, problem, kept", MALFORMED)
def test_malformed_deny_items_are_policy_errors(make_engine: Callable[..., EmbeddedEngine],
                                                body: str, problem: str,
                                                kept: list[str]) -> None:
    engine = make_engine(LABELLED, policy("odd", body, severity="HIGH", errcode="MT9007"))
    evaluation = engine.evaluate(make_review(pod(fail="yes")))
    assert sorted(v.msg for v in evaluation.violations) == sorted(
        ["[FAIL] LOW - labelled (MT9001)", *kept])
    assert all(v.severity is Severity.HIGH for v in evaluation.violations if v.policy == "odd")
    (error,) = evaluation.policy_errors
    assert error.policy == "odd" and problem in error.message, error.message


def test_matches_decides_applicability(make_engine: Callable[..., EmbeddedEngine]) -> None:
    """targets AND matches: a policy whose matches is not true has no result at all."""
    gated = policy("gated", 'matches if input.request.object.metadata.labels.team == "a"\n'
                   'deny contains {"msg": "gated"} if matches', errcode="MT9008")
    engine = make_engine(LABELLED, gated)
    assert [r.policy for r in engine.evaluate(make_review(pod())).results] == ["labelled"]
    assert [r.policy for r in engine.evaluate(make_review(pod(team="a"))).results] == [
        "gated", "labelled"]


def test_a_policy_without_matches_is_rejected_and_the_others_enforce() -> None:
    """OPA cannot tell an absent `matches` from a false one, so no engine guesses."""
    ungated = PolicyModule("configmap magtape-system/ungated", "ungated.rego",
                           "package kubernetes.admission.ungated\nimport rego.v1\n"
                           'policy_metadata := {"name": "ungated", "severity": "HIGH", '
                           '"errcode": "MT9009", "targets": {"Pod"}}\n'
                           'deny contains {"msg": "[FAIL] HIGH - always (MT9009)"} if true\n')
    engine = EmbeddedEngine()
    try:
        report = engine.load([LABELLED, ungated], {})
        assert [p.name for p in report.policies] == ["labelled"]
        (error,) = report.errors
        assert error.policy == "kubernetes.admission.ungated"
        assert "defines no `matches` rule" in error.message
        assert "policy_metadata.targets" in error.message  # says what to add
        assert errcodes(engine, pod(fail="yes")) == ["MT9001"]
    finally:
        engine.close()


def test_data_updates_change_decisions_without_a_new_policy_set(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = make_engine(NAMESPACE_FLAG)
    version = engine.evaluate(make_review(pod())).policy_set_version
    flagged = {"kubernetes": {"namespaces": {"team-a": {"metadata": {
        "name": "team-a", "annotations": {"flag": "on"}}}}}}
    engine.update_data(flagged)
    evaluation = engine.evaluate(make_review(pod()))
    assert [v.errcode for v in evaluation.violations] == ["MT9005"]
    assert evaluation.policy_set_version == version
    engine.update_data({})
    assert errcodes(engine, pod()) == []


def test_a_data_update_does_not_wait_for_busy_workers(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    """Requests that keep every worker busy do not hold an update back; the busy
    workers take it before their next request (they are killed here, and their
    replacements start with it)."""
    engine = make_engine(SLOW_ON_LABEL, NAMESPACE_FLAG, timeout_seconds=1.5, workers=2)
    pids = eventually(lambda: (p := worker_pids(engine)) and len(p) == 2 and p,
                      what="both workers")
    spent = {pid: procs.cpu_seconds(pid) for pid in pids}

    def slow() -> None:
        with pytest.raises(EngineError):
            engine.evaluate(make_review(pod(slow="yes")))

    busy = [threading.Thread(target=slow) for _ in range(2)]
    for thread in busy:
        thread.start()
    eventually(lambda: all(procs.cpu_seconds(p) > spent[p] + 0.1 for p in pids),
               what="both workers busy")
    engine.update_data({"kubernetes": {"namespaces": {"team-a": {"metadata": {
        "name": "team-a", "annotations": {"flag": "on"}}}}}})
    assert all(thread.is_alive() for thread in busy), "the update waited for a busy worker"
    for thread in busy:
        thread.join()
    assert errcodes(engine, pod()) == ["MT9005"]


def test_a_slow_policy_is_reported_by_vetting_and_the_others_enforce(
        make_engine: Callable[..., EmbeddedEngine]) -> None:
    engine = EmbeddedEngine(vet_timeout_seconds=3.0)
    try:
        started = time.monotonic()
        report = engine.load([LABELLED, ALWAYS_SLOW], {})
        # The deadline holds (bounded by it plus starting a child, not by the policy).
        assert 3.0 <= time.monotonic() - started < 3.0 + 10.0
        assert [p.name for p in report.policies] == ["labelled"]
        (error,) = report.errors
        assert error.policy == "kubernetes.admission.always_slow"
        assert "did not finish within 3s" in error.message
        assert engine.ready
        assert errcodes(engine, pod(fail="yes")) == ["MT9001"]
        # The verdict is cached: the next reload does not spend the deadline again.
        started = time.monotonic()
        again = engine.load([LABELLED, ALWAYS_SLOW, NAMESPACE_FLAG], {})
        assert [p.name for p in again.policies] == ["labelled", "namespace-flag"]
        assert time.monotonic() - started < 3.0  # the slow policy's deadline is not spent again
        assert [e.policy for e in again.errors] == ["kubernetes.admission.always_slow"]
    finally:
        engine.close()


def test_data_reaches_the_engine_while_a_slow_policy_set_is_vetted() -> None:
    """The data lane does not wait for the policy lane."""
    engine = EmbeddedEngine(vet_timeout_seconds=8.0)
    store = PolicyStore(engine, None, [NAMESPACE_FLAG])
    try:
        store.load_now()
        store.start()
        first = store.last_report
        assert first is not None and first.version == 1
        slow_policy = policy("slow-again", ALWAYS_SLOW.source.split("\n", 3)[3],
                             errcode="MT9009")
        store.set_modules([NAMESPACE_FLAG, slow_policy])  # vetting takes up to 8 s
        store.set_data(("kubernetes", "namespaces"), {"team-a": {"metadata": {
            "name": "team-a", "annotations": {"flag": "on"}}}})
        assert eventually(lambda: errcodes(engine, pod()) == ["MT9005"], 6)
        assert store.last_report is first, "the policy set was still being vetted"
    finally:
        store.stop(timeout=0)
        engine.close()


def test_the_opa_engines_readiness_costs_no_request_per_probe() -> None:
    """/readyz is probed every few seconds by every kubelet: one health check per TTL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from magtape.engine.opa import OpaEngine

    calls: list[str] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = OpaEngine(f"http://127.0.0.1:{server.server_port}", timeout_seconds=2)
        assert all(engine.ready for _ in range(20))
        assert calls == ["/health"]
    finally:
        server.shutdown()
        server.server_close()
