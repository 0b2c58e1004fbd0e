"""Notifications: Kubernetes Events and Slack alerts, off the request path.

The core hands a :class:`~magtape.decision.Outcome` to a :class:`Notifier`
and returns at once; a bounded background dispatcher does the I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from magtape.decision import Outcome


class Notifier(Protocol):
    def submit(self, outcome: Outcome) -> bool:
        """Queue notifications for ``outcome``; True when a Slack alert was queued.

        Must never block or raise: admission latency does not depend on it.
        """
        ...

    def close(self, timeout: float) -> None:
        """Flush queued work for at most ``timeout`` seconds, then stop."""
        ...


class NullNotifier:
    """Notifies nobody (local runs, ``magtape check``)."""

    def submit(self, outcome: Outcome) -> bool:
        return False

    def close(self, timeout: float) -> None:
        return None
