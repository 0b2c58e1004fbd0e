"""Admission of MagTapeException objects: MagTape's own webhook refuses invalid ones.

Registered in base/webhook.yaml for ``magtapeexceptions`` in every
namespace. An exception without ``expiresAt``, living longer than
``MAGTAPE_EXCEPTION_MAX_DAYS`` from its creation, or naming a check ID no
loaded policy has, is refused (with the ``opa`` engine MagTape does not load
the policies itself, so check IDs are not verified there) with every problem in one message. Who may
create exceptions at all is RBAC's decision (docs/exceptions.md).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from magtape.enforcement.exceptions import (
    API_GROUP,
    KIND,
    InvalidException,
    parse_exception,
    parse_time,
)
from magtape.enforcement.updates import old_object
from magtape.review import Review


def is_exception_review(review: Review) -> bool:
    return review.kind == KIND and review.request["kind"].get("group", "") == API_GROUP


def refusal(review: Review, *, max_lifetime: timedelta, known_checks: Collection[str] | None,
            now: datetime) -> str | None:
    """Why this MagTapeException may not be stored, or None when it may.

    The lifetime counts from the creation of the exception: from now on
    CREATE, from the old object's creationTimestamp on UPDATE, so an exception
    cannot be stretched by editing it (create a new one after review instead).
    """
    if review.operation not in ("CREATE", "UPDATE"):
        return None
    start = now
    old = old_object(review)
    if review.operation == "UPDATE" and old is not None:
        start = parse_time((old.get("metadata") or {}).get("creationTimestamp")) or now
    try:
        parse_exception(review.object, max_lifetime=max_lifetime, lifetime_start=start,
                        known_checks=known_checks)
    except InvalidException as exc:
        return str(exc)
    return None
