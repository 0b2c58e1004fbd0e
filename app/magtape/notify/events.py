"""Kubernetes Events for policy failures, where ``kubectl describe`` shows them.

One ``events.k8s.io/v1`` Event per request with failures (denied or not), in
the request's namespace, ``regarding`` the object. Written through the real
``kubernetes`` client; an API error is logged and counted
(``magtape_notifications_total{channel="event",outcome="failed"}``), never
raised: the admission answer has long been sent when this runs.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kubernetes.client import EventsV1Event, V1ObjectMeta, V1ObjectReference

from magtape.metrics import Channel, Metrics
from magtape.remediation import Catalogue, default_catalogue, remedy_lines
from magtape.text import NAME_MAX, clean, escape, fit_parts

if TYPE_CHECKING:
    from magtape.decision import Outcome

log = logging.getLogger(__name__)

REASON = "MagTapePolicyFailure"
REPORTING_CONTROLLER = "magtape"
EVENT_LABELS = {"magtape-event": "policy-failure"}
# Who sent the request (the review's userInfo.username): Events have no field
# for it, and the compliance page (magtape ui) shows it beside each denial.
REQUESTED_BY = "magtape.k8s.t-mobile.com/requested-by"
# API validation limits (k8s.io/kubernetes/pkg/apis/core/validation, events).
NOTE_MAX_BYTES = 1024
ACTION_MAX_CHARS = 128
REPORTING_INSTANCE_MAX_CHARS = 128
# generateName: the API server appends 5 random characters and names are at
# most 63 characters, so the prefix is cut at 58.
GENERATE_NAME_MAX = 58
# Events for cluster-scoped objects go where kubectl puts them.
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"

_NOT_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")


def generate_name(object_name: str, kind: str) -> str:
    """A valid generateName prefix ending in "-" (so names read ``<object>-<random>``).

    Not ".": the API server validates generateName itself as a DNS subdomain
    (only a trailing "-" is allowed), so "<object>." is refused with 422.
    """
    base = _NOT_NAME_CHARS.sub("-", (object_name or kind or "magtape").lower())
    base = base[:GENERATE_NAME_MAX - 1].strip(".-") or "magtape"
    return f"{base}-"


def event_time(now: datetime | None = None) -> datetime:
    """The Event's eventTime, never on a whole second.

    The client serializes datetimes with isoformat(), which drops the
    fraction when it is zero; the API server's MicroTime parser requires
    six fractional digits and would reject such an Event.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment if moment.microsecond else moment.replace(microsecond=1)


def build_event(outcome: Outcome, reporting_instance: str,
                now: datetime | None = None, remedies: Catalogue | None = None) -> EventsV1Event:
    """The Event for one outcome: the original message, then how to fix each check."""
    review = outcome.review
    group = review.request["kind"].get("group", "")
    version = review.request["kind"].get("version", "")
    uid = review.object.get("metadata", {}).get("uid")
    regarding = V1ObjectReference(
        kind=clean(review.kind, NAME_MAX), name=clean(review.name, NAME_MAX),
        api_version=(f"{group}/{version}" if group else version) or None,
        namespace=review.namespace or None,
        uid=uid if isinstance(uid, str) and uid else None)
    action = "Denied" if not outcome.allowed else "Allowed"
    return EventsV1Event(
        metadata=V1ObjectMeta(generate_name=generate_name(review.name, review.kind),
                              namespace=event_namespace(outcome), labels=dict(EVENT_LABELS),
                              annotations=({REQUESTED_BY: clean(review.username, NAME_MAX)}
                                           if review.username else None)),
        event_time=event_time(now),
        type="Warning",
        reason=REASON,
        action=action[:ACTION_MAX_CHARS],
        note=event_note(outcome, remedies),
        regarding=regarding,
        reporting_controller=REPORTING_CONTROLLER,
        reporting_instance=reporting_instance[:REPORTING_INSTANCE_MAX_CHARS],
    )


def event_note(outcome: Outcome, remedies: Catalogue | None = None) -> str:
    """Each failure as the admission warning says it (with how it was allowed: exempted
    by which exception until when, existing, scheduled, inherited), then how to fix
    each check; within the API's limit, cut between whole messages with a count of
    what was left out."""
    failures = [("" if i == 0 else ", ", escape(m), "failure")
                for i, m in enumerate(outcome.decision.messages)]
    fixes = [(" | How to fix: " if i == 0 else " | ", escape(line), "fix")
             for i, line in enumerate(remedy_lines(outcome.violations,
                                                   remedies or default_catalogue()))]
    return fit_parts(failures + fixes, NOTE_MAX_BYTES)


def event_namespace(outcome: Outcome) -> str:
    return outcome.review.namespace or CLUSTER_SCOPED_EVENT_NAMESPACE


class EventRecorder:
    """The Events :class:`~magtape.notify.dispatcher.Sink`."""

    channel: Channel = "event"

    def __init__(self, api_client: Any, reporting_instance: str, metrics: Metrics,
                 timeout_seconds: float = 5.0, remedies: Catalogue | None = None) -> None:
        from magtape.kube.rest import RawApi

        self._client = api_client  # its serializer writes the Event's MicroTime as required
        self._api = RawApi(api_client, timeout_seconds)
        self._remedies = remedies  # the built-in and custom policies' (catalogue_for)
        self._instance = reporting_instance
        self._metrics = metrics

    def deliver(self, outcome: Outcome) -> None:
        from magtape.kube.rest import EVENTS, KubeError

        review = outcome.review
        event = build_event(outcome, self._instance, remedies=self._remedies)
        try:
            self._api.create(EVENTS, self._client.sanitize_for_serialization(event),
                             event_namespace(outcome))
        except KubeError as exc:  # HTTP errors, and an unreachable API server (status 0)
            self._metrics.notification("event", "failed")
            hint = (" (check MagTape's RBAC allows create on events.k8s.io events)"
                    if exc.status == 403 else "")
            log.warning("could not create the Event for %s %s/%s: %s%s", review.kind,
                        review.namespace, review.name,
                        f"HTTP {exc.status} {exc.reason}" if exc.status else exc.message, hint)
            return
        self._metrics.notification("event", "sent")

    def close(self, timeout: float) -> None:
        return None
