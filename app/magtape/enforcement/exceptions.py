"""``MagTapeException``: a dated, reviewed exemption of named checks for named objects.

One parser serves the webhook that admits MagTapeException objects, the
watcher that loads them and ``magtape check --exceptions``, so an exception is
valid in the same way everywhere. An exception covers a failure only when the
failure's check ID is listed, the object is in the exception's namespace and
matches every given criterion (kind, name or ``*``/``?`` pattern, label
selector, container names, image patterns), and the decision time is before
``expiresAt``. Container and image criteria are about the failure, not the
object: only a failure whose ``details`` name a matching container (and
image) is exempted, so a vendor sidecar can be exempted from one check
without exempting the pod it runs in.
Expiry is compared with the decision's clock, never cached, so an exception
stops applying at its expiry without any restart or event.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import translate
from functools import cached_property
from typing import Any

from magtape.enforcement.selector import LabelSelector, SelectorError, parse_selector
from magtape.policy import Violation

API_GROUP = "magtape.k8s.t-mobile.com"
API_VERSION = "v1alpha1"
KIND = "MagTapeException"
PLURAL = "magtapeexceptions"

# Everything here is written by people and read on every admission: bounded.
MAX_CHECKS = 32
MAX_KINDS = 16
MAX_NAMES = 64
MAX_CONTAINERS = 32
MAX_IMAGES = 32
# spec.match's fields (the CRD's schema lists the same ones).
MATCH_FIELDS = ("kinds", "names", "selector", "containers", "images")
MAX_IMAGE_LENGTH = 512  # a registry/path:tag@sha256:digest reference fits
MAX_TEXT = 1024
_NAME_PATTERN = re.compile(r"^[a-z0-9*?]([-a-z0-9.*?]{0,251}[a-z0-9*?])?$")
# Image reference characters, with * and ? (matched as written in the pod spec).
_IMAGE_PATTERN = re.compile(r"^[A-Za-z0-9*?][-A-Za-z0-9._/:@*?]*$")
_CHECK_ID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$")


def _names_something(names: list[str], selector: LabelSelector | None) -> bool:
    """Whether the match narrows the namespace down: names that are not all wildcards,
    or a selector requiring some label (matchLabels, In or Exists)."""
    if names and all(p.strip("*?-.") for p in names):
        return True
    return selector is not None and any(r.operator in ("In", "Exists")
                                        for r in selector.requirements)


class InvalidException(ValueError):
    """A MagTapeException is not acceptable; ``problems`` says what to fix, one per line."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"{KIND} {where} is invalid: " + "; ".join(problems))
        self.where = where
        self.problems = problems


@dataclass(frozen=True)
class Exemption:
    """A parsed, validated MagTapeException: the waiver it grants. Called an exemption in
    the code (a Python exception is something else); the resource keeps its name."""

    namespace: str
    name: str
    checks: frozenset[str]
    expires_at: datetime
    kinds: frozenset[str] = frozenset()  # empty: any kind
    names: tuple[str, ...] = ()  # exact names or patterns; empty: any name
    selector: LabelSelector | None = None  # None: any labels
    containers: frozenset[str] = frozenset()  # empty: the failure may concern any container
    images: tuple[str, ...] = ()  # image patterns; empty: the failure may concern any image
    reason: str = ""
    owner: str = ""
    ticket: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def expires_text(self) -> str:
        return self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def note(self) -> str:
        return f"[exempted by {KIND} {self.ref} until {self.expires_text}]"

    def active(self, now: datetime) -> bool:
        return now < self.expires_at

    @cached_property
    def _names(self) -> re.Pattern[str] | None:
        """All of ``names`` as one compiled pattern (``*`` and ``?`` as in a shell)."""
        if not self.names:
            return None
        return re.compile("|".join(f"(?:{translate(n)})" for n in self.names))

    @cached_property
    def _images(self) -> re.Pattern[str] | None:
        """All of ``images`` as one pattern; ``*`` also crosses ``/`` and ``:``."""
        if not self.images:
            return None
        return re.compile("|".join(f"(?:{translate(i)})" for i in self.images))

    def matches_object(self, namespace: str, kind: str, name: str,
                       labels: Mapping[str, str] | None) -> bool:
        """True when the object is one this exception is about (checks and expiry aside)."""
        if namespace != self.namespace or (self.kinds and kind not in self.kinds):
            return False
        if self._names is not None and not self._names.match(name):
            return False
        return self.selector is None or self.selector.matches(labels)

    def covers_violation(self, violation: Violation) -> bool:
        """True when ``violation`` (of an object :meth:`matches_object`) is exempted."""
        if violation.errcode not in self.checks:
            return False
        details = violation.details or {}
        if self.containers:
            # Only failures that say which container they are about can match:
            # a pod-level failure is not exempted by a container exception.
            container = details.get("container")
            if not (isinstance(container, str) and container in self.containers):
                return False
        if self._images is not None:
            # Likewise only failures that name the image: a failure without
            # one (pod level, or a policy that does not say) is never covered.
            image = details.get("image")
            if not (isinstance(image, str) and self._images.match(image)):
                return False
        return True


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2026-12-01T00:00:00Z``) as an aware UTC datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def parse_exception(obj: Any, *, max_lifetime: timedelta, lifetime_start: datetime | None = None,
                    known_checks: Collection[str] | None = None) -> Exemption:
    """Validate a MagTapeException object; raise :class:`InvalidException` listing every problem.

    ``lifetime_start`` is when the lifetime is counted from (the admission
    time of a new exception); without it, the object's creationTimestamp.
    ``known_checks``, when given, are the check IDs of the loaded policies.
    """
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    where = f"{namespace}/{name}" if namespace else name or "<unnamed>"
    problems: list[str] = []
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict):
        raise InvalidException(where, ["spec is missing: it needs checks, match, expiresAt "
                                       "and reason"])
    if not namespace:
        problems.append("metadata.namespace is missing: an exception applies in its namespace")

    checks = _strings(spec, "checks", MAX_CHECKS, problems, required=True)
    bad_ids = [c for c in checks if not _CHECK_ID.match(c)]
    if bad_ids:
        problems.append(f"spec.checks has malformed check IDs {bad_ids}")
    elif known_checks is not None:
        unknown = sorted(set(checks) - set(known_checks))
        if unknown:
            problems.append(f"spec.checks names unknown check ID(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known_checks)) or 'none loaded yet'}")

    match = spec.get("match")
    kinds: list[str] = []
    names: list[str] = []
    containers: list[str] = []
    images: list[str] = []
    selector: LabelSelector | None = None
    if not isinstance(match, dict):
        problems.append("spec.match is missing: say which objects (names and/or selector)")
    else:
        unknown_fields = set(match) - set(MATCH_FIELDS)
        if unknown_fields:
            problems.append(f"spec.match has unknown field(s) {', '.join(sorted(unknown_fields))}"
                            f"; accepted {', '.join(MATCH_FIELDS)}")
        kinds = _strings(match, "kinds", MAX_KINDS, problems, prefix="spec.match.")
        names = _strings(match, "names", MAX_NAMES, problems, prefix="spec.match.")
        containers = _strings(match, "containers", MAX_CONTAINERS, problems,
                              prefix="spec.match.")
        images = _strings(match, "images", MAX_IMAGES, problems, prefix="spec.match.",
                          max_length=MAX_IMAGE_LENGTH)
        for pattern in images:
            if not _IMAGE_PATTERN.match(pattern) or pattern.strip("*?") == "":
                problems.append(f"spec.match.images entry {pattern!r} is not an image reference "
                                "or a pattern of one with * and ? (a pattern of only wildcards "
                                "would match every image: leave images out instead)")
        for pattern in names:
            if not _NAME_PATTERN.match(pattern):
                problems.append(f"spec.match.names entry {pattern!r} is not an object name or a "
                                "pattern of name characters with * and ?")
        if "selector" in match:
            try:
                selector = parse_selector(match["selector"], "spec.match.selector")
            except SelectorError as exc:
                problems.append(str(exc))

        if not _names_something(names, selector):
            problems.append("spec.match needs names or a selector that name what it exempts: "
                            "an exception never covers a whole namespace (a name pattern of "
                            "only wildcards and separators, an empty selector, or one of only "
                            "NotIn and DoesNotExist would match every object)")

    expires_at = parse_time(spec.get("expiresAt"))
    if "expiresAt" not in spec:
        problems.append("spec.expiresAt is missing: every exception expires "
                        f"(at most {_days(max_lifetime)} after it is created)")
    elif expires_at is None:
        problems.append(f"spec.expiresAt {spec.get('expiresAt')!r} is not an RFC 3339 time "
                        "such as 2026-12-01T00:00:00Z")
    else:
        start = lifetime_start or parse_time(meta.get("creationTimestamp"))
        if start is not None and expires_at - start > max_lifetime:
            latest = (start + max_lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
            problems.append(f"spec.expiresAt {spec['expiresAt']} is more than "
                            f"{_days(max_lifetime)} after creation; the latest allowed is "
                            f"{latest} (MAGTAPE_EXCEPTION_MAX_DAYS)")

    reason = _text(spec, "reason", problems, required=True)
    owner = _text(spec, "owner", problems)
    ticket = _text(spec, "ticket", problems)
    if not owner and not ticket:
        problems.append("spec.owner or spec.ticket is required: who answers for this exception")
    if problems:
        raise InvalidException(where, problems)
    assert expires_at is not None  # a missing or bad expiry is a problem above
    return Exemption(namespace=namespace, name=name, checks=frozenset(checks),
                           expires_at=expires_at, kinds=frozenset(kinds), names=tuple(names),
                           selector=selector, containers=frozenset(containers),
                           images=tuple(images),
                           reason=reason, owner=owner, ticket=ticket)


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} days"


def _strings(doc: dict[str, Any], key: str, limit: int, problems: list[str], *,
             prefix: str = "spec.", required: bool = False,
             max_length: int = 253) -> list[str]:
    value = doc.get(key)
    if value is None:
        if required:
            problems.append(f"{prefix}{key} is missing: list at least one")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{prefix}{key} must be a list of non-empty strings")
        return []
    if required and not value:
        problems.append(f"{prefix}{key} is empty: list at least one")
    if len(value) > limit:
        problems.append(f"{prefix}{key} has {len(value)} entries; at most {limit}")
    if any(len(v) > max_length for v in value):
        problems.append(f"{prefix}{key} has an entry longer than {max_length} characters")
    return list(value)


def _text(spec: dict[str, Any], key: str, problems: list[str], required: bool = False) -> str:
    value = spec.get(key)
    if value is None or value == "":
        if required:
            problems.append(f"spec.{key} is missing: say why this exception is needed")
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        problems.append(f"spec.{key} must be text of at most {MAX_TEXT} characters")
        return ""
    return value
