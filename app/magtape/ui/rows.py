"""The presentation model the HTML report and the page share: results grouped by check.

One :class:`Row` per failed, warned, exempted or unevaluable check on one
object, whatever produced it (``magtape check``, ``magtape audit`` or a
stored PolicyReport); one :class:`Group` per check ID, with what the check's
remediation says. Pure data: no Flask, no Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# PolicyReport words, in the order the page and the report list them.
SEVERITIES = ("high", "medium", "low")
SEVERITY_OF = {"HIGH": "high", "MED": "medium", "MEDIUM": "medium", "LOW": "low"}
RESULTS = ("fail", "error", "warn", "skip")
RESULT_LABEL = {"fail": "denied", "error": "error", "warn": "warned", "skip": "exempted"}


def severity_word(value: str) -> str:
    """``high``/``medium``/``low`` from either spelling ("" when unknown)."""
    v = value.strip()
    return SEVERITY_OF.get(v.upper(), v.lower() if v.lower() in SEVERITIES else "")


@dataclass(frozen=True)
class ExemptionNote:
    """The MagTapeException that covers a result, as far as it is known."""

    ref: str  # namespace/name
    owner: str = ""
    ticket: str = ""
    expires_at: datetime | None = None
    note: str = ""  # as the result states it when the exception itself is not known

    def time_left(self, now: datetime) -> str:
        return time_left(self.expires_at, now) if self.expires_at else ""


@dataclass(frozen=True)
class Row:
    namespace: str  # "" for cluster-scoped objects
    kind: str
    name: str
    check_id: str
    policy: str
    severity: str  # high, medium, low, ""
    result: str  # fail, error, warn, skip
    message: str
    location: str = ""  # file:line (magtape check)
    exemption: ExemptionNote | None = None

    @property
    def label(self) -> str:
        who = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {who}"

    @property
    def outcome(self) -> str:
        return RESULT_LABEL.get(self.result, self.result)


@dataclass(frozen=True)
class CheckInfo:
    """What the report says about a check, from the remediation catalogue."""

    check_id: str
    policy: str = ""
    severity: str = ""
    title: str = ""
    hint: str = ""
    url: str = ""

    @property
    def heading(self) -> str:
        """``MT2001 · privileged-pod · HIGH`` (a README title names its ID already)."""
        if self.title.startswith(self.check_id):
            return self.title
        return f"{self.check_id} {self.title or self.policy}".strip()


@dataclass
class Group:
    info: CheckInfo
    rows: list[Row] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(1 for r in self.rows if r.result == result)


def group_rows(rows: Iterable[Row], info_of: Callable[[Row], CheckInfo]) -> list[Group]:
    """Rows grouped by check ID, in first-seen order (callers sort the rows)."""
    groups: dict[str, Group] = {}
    for row in rows:
        key = row.check_id or row.policy
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(info_of(row))
        group.rows.append(row)
    return list(groups.values())


def row_order(row: Row) -> tuple[int, int, str, str, str, str]:
    """Most severe checks first, then by check ID (so a check's rows stay together),
    then what would deny first, then by object."""
    return (SEVERITY_RANK.get(row.severity, 3), RESULT_RANK.get(row.result, 9),
            row.check_id or row.policy, row.namespace, row.kind, row.name)


SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
RESULT_RANK = {r: i for i, r in enumerate(RESULTS)}


def time_left(moment: datetime, now: datetime) -> str:
    """``3d 4h`` / ``2h 5m`` / ``40m`` until ``moment``; ``expired 2h ago`` after it."""
    delta = moment - now
    text = _span(abs(delta))
    return text if delta > timedelta(0) else f"expired {text} ago"


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"
