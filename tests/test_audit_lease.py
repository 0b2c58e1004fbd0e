"""Leader election over a Lease: one leader among candidates, hand-over on release and expiry.

Against the shared fake API server (its resourceVersion preconditions give
the same 409s as the real one; the e2e suite runs two real replicas). Time
is a clock the test moves, so expiry needs no waiting; hand-overs are polled
with a deadline.
"""

from __future__ import annotations

import threading

from fakekube import FakeKube, Resource
from magtape.audit.lease import LeaderElector
from magtape.kube.rest import RawApi
from waiting import eventually


class Candidate:
    def __init__(self, kube: FakeKube, identity: str, clock: list[float] | None = None,
                 lease: float = 4.0, retry: float = 0.05) -> None:
        self.starts = self.stops = 0
        self._lock = threading.Lock()
        kwargs = {"clock": lambda: clock[0]} if clock is not None else {}
        self.elector = LeaderElector(RawApi(kube.api_client()), "magtape-system",
                                     "magtape-audit", identity, on_start=self._start,
                                     on_stop=self._stop, lease_seconds=lease,
                                     retry_seconds=retry, **kwargs)

    def _start(self) -> None:
        with self._lock:
            self.starts += 1

    def _stop(self) -> None:
        with self._lock:
            self.stops += 1


def holder(kube: FakeKube) -> str:
    lease = kube.get("coordination.k8s.io/v1", "leases", "magtape-audit", "magtape-system")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def setup(kube: FakeKube) -> None:
    kube.register(Resource("coordination.k8s.io/v1", "leases", "Lease", True))


def test_one_of_two_leads_and_a_release_hands_over_at_once(fake_kube: FakeKube) -> None:
    setup(fake_kube)
    a, b = Candidate(fake_kube, "a"), Candidate(fake_kube, "b", lease=600.0, retry=0.05)
    a.elector.start()
    eventually(lambda: a.elector.leading, 10, "a to lead")
    b.elector.start()
    # b keeps trying while a renews: it must not lead, however many rounds it runs.
    eventually(lambda: len(fake_kube.requests_matching("GET", "leases")) > 40, 10,
               "many election rounds")
    assert not b.elector.leading and holder(fake_kube) == "a"
    a.elector.stop()  # releases the Lease
    assert a.stops == 1
    eventually(lambda: b.elector.leading, 10, "b to take over the released Lease")
    assert holder(fake_kube) == "b" and b.starts == 1
    b.elector.stop()


def test_an_expired_lease_is_taken_over_and_the_old_leader_steps_down(
        fake_kube: FakeKube) -> None:
    setup(fake_kube)
    clock = [0.0]
    a = Candidate(fake_kube, "a", clock)
    a.elector.start()
    eventually(lambda: a.elector.leading, 10, "a to lead")
    # a's renewals fail from now on (API server unreachable for a).
    fault = fake_kube.fail(500, method="PUT", path="leases/magtape-audit")
    b = Candidate(fake_kube, "b", clock)
    b.elector.start()
    eventually(lambda: len(fake_kube.requests_matching("GET", "leases")) > 10, 10, "rounds")
    assert not b.elector.leading  # the Lease is fresh on b's clock
    clock[0] += 5.0  # past the lease duration: a must stop leading before b may take over
    eventually(lambda: a.stops == 1 and not a.elector.leading, 10, "a to step down")
    a.elector.stop()  # a stays away (as a partitioned replica would)
    fake_kube.faults.remove(fault)
    eventually(lambda: b.elector.leading and holder(fake_kube) == "b", 10, "b to lead")
    b.elector.stop()
