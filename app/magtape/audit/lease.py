"""Leader election over a ``coordination.k8s.io/v1`` Lease: one audit writer per cluster.

Every replica runs an elector; the one holding the Lease runs the audit and
writes the reports, the others wait. The algorithm is client-go's: a holder
renews every ``retry_seconds``; a candidate takes the Lease over only after
it has seen it unchanged for ``lease_seconds`` (time measured on the
candidate's own monotonic clock, so clock skew between nodes does not
matter); every write is conditional on the resourceVersion read, so two
candidates racing for it get one success and one 409. A leader that cannot
renew for ``lease_seconds`` stops leading before anyone may take over
(renewal deadline < lease duration). On shutdown the leader releases the
Lease, so another replica takes over at once instead of after the lease expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from magtape.background import Worker
from magtape.kube.objects import Obj
from magtape.kube.rest import KubeError, RawApi, ResourceRef

log = logging.getLogger(__name__)

LEASES = ResourceRef("coordination.k8s.io/v1", "leases")

HELD, OTHER, FAILED = "held", "other", "failed"  # outcomes of one election round


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Runs ``on_start`` when this replica becomes leader and ``on_stop`` when it stops."""

    def __init__(self, api: RawApi, namespace: str, name: str, identity: str, *,
                 on_start: Callable[[], None], on_stop: Callable[[], None],
                 lease_seconds: float = 15.0, retry_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if retry_seconds * 2 > lease_seconds:
            raise ValueError("the retry period must be at most half the lease duration")
        self._api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self._on_start, self._on_stop = on_start, on_stop
        self._lease_seconds, self._retry = lease_seconds, retry_seconds
        self._clock = clock
        self._worker = Worker("magtape-audit-lease", self._step, on_exit=self._resign)
        self.leading = False
        self._renewed_at = 0.0  # monotonic time of our last successful write
        self._observed: tuple[str, str] | None = None  # (resourceVersion, holder) last seen
        self._observed_at = 0.0

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    # ---------------------------------------------------------------- loop
    def _step(self) -> None:
        """One election round, then wait ``retry_seconds`` (cut short by stop)."""
        try:
            state = self._try()
        except KubeError as exc:
            log.warning("audit leader election: Lease %s/%s: %s", self.namespace,
                        self.name, exc)
            state = FAILED
        except Exception:  # a defect counts as a failed round: it may cost the lead
            log.exception("audit leader election failed")
            state = FAILED
        if state == HELD and not self.leading:
            self.leading = True
            log.info("audit: %s leads (Lease %s/%s)", self.identity, self.namespace,
                     self.name)
            self._call(self._on_start)
        elif state == OTHER and self.leading:
            self._step_down("another replica holds the Lease")
        elif state == FAILED and self.leading and (
                self._clock() - self._renewed_at > self._lease_seconds - self._retry):
            self._step_down("could not renew the Lease in time")
        self._worker.wait(self._retry)

    def _resign(self) -> None:
        if self.leading:
            self._step_down("shutting down")
            self._release()

    def _step_down(self, why: str) -> None:
        self.leading = False
        log.info("audit: %s stops leading: %s", self.identity, why)
        self._call(self._on_stop)

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # the election goes on; the next hand-over retries
            log.exception("audit: leadership callback failed")

    def _try(self) -> str:
        """One round: create, renew or take over the Lease: HELD, OTHER or FAILED."""
        now = datetime.now(UTC)
        try:
            lease = self._api.get(LEASES, self.name, self.namespace)
        except KubeError as exc:
            if not exc.not_found:
                raise
            return self._write(None, self._spec(now, now, 0))
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        if (version, holder) != self._observed:
            self._observed, self._observed_at = (version, holder), self._clock()
        if holder == self.identity:
            renewed = {**spec, "renewTime": micro_time(now),
                       "leaseDurationSeconds": int(self._lease_seconds)}
            return self._write(lease, renewed)
        duration = float(spec.get("leaseDurationSeconds") or self._lease_seconds)
        if holder and self._clock() - self._observed_at < duration:
            return OTHER  # someone else holds a Lease that is still fresh
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        return self._write(lease, self._spec(now, now, transitions))

    def _spec(self, acquired: datetime, renewed: datetime, transitions: int) -> Obj:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self._lease_seconds),
                "acquireTime": micro_time(acquired), "renewTime": micro_time(renewed),
                "leaseTransitions": transitions}

    def _write(self, lease: Obj | None, spec: Obj) -> str:
        try:
            if lease is None:
                body = {"apiVersion": LEASES.group_version, "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec}
                self._api.create(LEASES, body, self.namespace)
            else:
                self._api.replace(LEASES, self.name, {**lease, "spec": spec}, self.namespace)
        except KubeError as exc:
            if exc.conflict:  # another replica wrote first
                return OTHER
            raise
        self._renewed_at = self._clock()
        return HELD

    def _release(self) -> None:
        """Hand the Lease back (holder emptied) so a standby replica need not wait it out."""
        try:
            lease = self._api.get(LEASES, self.name, self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1,
                            "renewTime": micro_time(datetime.now(UTC))}
                self._api.replace(LEASES, self.name, {**lease, "spec": released},
                                  self.namespace)
        except KubeError as exc:
            log.info("audit: could not release the Lease (%s); it expires by itself", exc)
