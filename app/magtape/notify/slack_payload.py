"""The Slack incoming-webhook payload for one outcome (docs/notifications.md).

Every value taken from a review is escaped and bounded (magtape.text) before
Slack's own three control characters are escaped, so a forged review can
neither forge lines nor make an alert of unbounded size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magtape.remediation import Catalogue, default_catalogue, remedy_line
from magtape.text import MESSAGE_MAX, NAME_MAX, clean, clean_lines

if TYPE_CHECKING:
    from magtape.decision import Outcome

PRETEXT_DENIED = "MagTape | Policy Denial Detected"
PRETEXT_FAILURES = "MagTape | Policy Failures Detected"
PRETEXT_REMINDER = "MagTape | Policy Exception Expiring"  # magtape.wiring.reminders
# Messages listed in one alert; the rest are counted in a last line.
MESSAGES_MAX = 20


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its API asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_payload(outcome: Outcome, *, cluster: str, username: str, icon: str,
                  customer: bool, remedies: Catalogue | None = None) -> dict[str, Any]:
    """The incoming-webhook JSON for one outcome (see docs/notifications.md)."""
    review = outcome.review
    denied = not outcome.allowed
    pretext = (PRETEXT_REMINDER if outcome.reminder
               else PRETEXT_DENIED if denied else PRETEXT_FAILURES)
    fields = [
        ("Cluster", cluster, True),
        ("Namespace", review.namespace, True),
        ("MagTape Deny Level", outcome.deny_level.value, True),
        ("Workload", f"{review.kind.lower()}/{review.name}", False),
        ("User", review.username, False),
        ("Customer Alert", str(customer), True),
    ]
    cells = [{"title": t, "value": _escape(clean(v, MESSAGE_MAX)), "short": s}
             for t, v, s in fields]
    # From the policies' remedies (built-in and custom), one line per failed check.
    if lines := remedy_line(outcome.violations, remedies or default_catalogue()):
        cells.append({"title": "How to fix", "short": False,
                      "value": _escape(clean_lines(lines, MESSAGE_MAX))})
    return {
        "username": username,
        "icon_emoji": icon,
        "attachments": [{
            "color": "danger" if denied else "warning",
            "pretext": pretext,
            "fallback": _escape(
                f'MagTape detected failures for {clean(review.kind, NAME_MAX)} '
                f'"{clean(review.name, NAME_MAX)}" in namespace '
                f'"{clean(review.namespace, NAME_MAX)}" on cluster "{cluster}"'),
            "text": "\n".join(_escape(m) for m in _bounded_messages(outcome.decision.messages)),
            "fields": cells,
        }],
    }




def _bounded_messages(messages: list[str]) -> list[str]:
    shown = [clean(m, MESSAGE_MAX) for m in messages[:MESSAGES_MAX]]
    if len(messages) > MESSAGES_MAX:
        shown.append(f"... and {len(messages) - MESSAGES_MAX} more failure(s)")
    return shown
