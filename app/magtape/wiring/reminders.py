"""Slack (and Event) reminders that an exception is about to expire.

A background thread looks at the exceptions in force every minute; each one
that expires within ``MAGTAPE_EXCEPTION_REMINDER_HOURS`` is reminded once
(per expiry time, so an exception replaced with a later expiry is reminded
again) through the ordinary notifier, which sends it to the namespace's
Slack target and the default one. Each replica reminds on its own; with
several replicas the notifier's de-duplication is per replica, so expect one
reminder per replica.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from magtape.background import Worker
from magtape.decision import Decision, Outcome
from magtape.enforcement.evaluator import Clock, utc_now
from magtape.enforcement.exceptions import API_GROUP, API_VERSION, KIND, Exemption
from magtape.enforcement.state import EnforcementState
from magtape.notify import Notifier
from magtape.policy import DenyLevel, Severity, Violation
from magtape.review import make_review

log = logging.getLogger(__name__)

REMINDER_POLICY = "exception-expiry"


def reminder_outcome(exception: Exemption, now: datetime, level: DenyLevel) -> Outcome:
    """The notification for one exception that expires soon (about the exception object)."""
    left = exception.expires_at - now
    hours = max(0, int(left.total_seconds() // 3600))
    who = ", ".join(x for x in (f"owner {exception.owner}" if exception.owner else "",
                                f"ticket {exception.ticket}" if exception.ticket else "") if x)
    msg = (f"{KIND} {exception.ref} for {', '.join(sorted(exception.checks))} expires at "
           f"{exception.expires_text} (in {hours // 24}d {hours % 24}h); after that its "
           f"failures are enforced again. Fix the workloads or have a renewed exception "
           f"reviewed ({who}).")
    obj = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
           "metadata": {"name": exception.name, "namespace": exception.namespace}}
    violation = Violation(msg=msg, policy=REMINDER_POLICY, severity=Severity.LOW,
                          errcode=",".join(sorted(exception.checks)))
    decision = Decision(allowed=True, violations=(violation,), denying=(), deny_level=level)
    return Outcome(make_review(obj, exception.namespace, operation="UPDATE", username="magtape"),
                   decision, level, reminder=True)


class ExpiryReminders:
    """Finds exceptions that expire soon and hands one reminder each to the notifier."""

    def __init__(self, state: EnforcementState, notifier: Notifier, lead: timedelta,
                 level: DenyLevel, clock: Clock = utc_now, interval_seconds: float = 60.0) -> None:
        self._state, self._notifier, self._lead, self._level = state, notifier, lead, level
        self._clock = clock
        self._interval = interval_seconds
        self._sent: set[tuple[str, datetime]] = set()
        # A defect in one round is logged by the worker; the next round runs as usual.
        self._worker = Worker("magtape-exception-reminders", self._step)

    def run_once(self) -> list[Exemption]:
        """Remind every exception now due; the ones reminded."""
        now = self._clock()
        current = self._state.all_exceptions()
        keys = {(e.ref, e.expires_at) for e in current}
        self._sent &= keys  # forget deleted or replaced exceptions: bounded by what exists
        due = [e for e in current if e.active(now) and e.expires_at - now <= self._lead
               and (e.ref, e.expires_at) not in self._sent]
        for exception in due:
            self._sent.add((exception.ref, exception.expires_at))
            self._notifier.submit(reminder_outcome(exception, now, self._level))
        return due

    def start(self) -> None:
        self._worker.start()

    def _step(self) -> bool:
        if self._worker.wait(self._interval):
            return False
        self.run_once()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)
