"""The exceptions and overrides in force, and the watch handlers that keep them current.

Admission threads read a snapshot (immutable tuples swapped under a lock);
the reflector threads replace it. An exception that fails validation when it
is loaded (created while MagTape's own webhook was not there to refuse it) is
left out and logged; an overrides document that fails to parse leaves the
last good one in force, so a typo never loosens enforcement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from magtape.enforcement.exceptions import Exemption, InvalidException, parse_exception
from magtape.enforcement.overrides import (
    CONFIG_KEY,
    ConfigInvalid,
    EnforcementConfig,
    parse_config,
)
from magtape.kube.objects import Obj, metadata, name

log = logging.getLogger(__name__)



class EnforcementState:
    """Thread-safe holder of the current exceptions (by namespace) and overrides."""

    def __init__(self, config: EnforcementConfig | None = None,
                 exceptions: Iterable[Exemption] = ()) -> None:
        self._lock = threading.Lock()
        self._config = config or EnforcementConfig()
        self._exceptions: dict[tuple[str, str], Exemption] = {
            (e.namespace, e.name): e for e in exceptions}
        self._by_namespace = self._index()
        self._known_checks: frozenset[str] | None = None

    @property
    def known_checks(self) -> frozenset[str] | None:
        """Check IDs of the loaded policies (None: unknown, e.g. with the opa engine)."""
        with self._lock:
            return self._known_checks

    def set_known_checks(self, checks: Iterable[str]) -> None:
        with self._lock:
            self._known_checks = frozenset(checks)

    @property
    def config(self) -> EnforcementConfig:
        with self._lock:
            return self._config

    def set_config(self, config: EnforcementConfig) -> None:
        with self._lock:
            self._config = config

    def exceptions_in(self, namespace: str) -> tuple[Exemption, ...]:
        with self._lock:
            return self._by_namespace.get(namespace, ())

    def all_exceptions(self) -> tuple[Exemption, ...]:
        with self._lock:
            return tuple(self._exceptions.values())

    def next_transition(self, now: datetime) -> datetime | None:
        """The next moment a decision can change by time alone (an expiry, a denyFrom).

        An audit that re-evaluates stored objects schedules a pass for then, so
        an expired exception stops applying there when it stops in admission.
        """
        with self._lock:
            moments = [e.expires_at for e in self._exceptions.values()]
            moments += [r.deny_from for r in self._config.checks.values() if r.deny_from]
        future = [m for m in moments if m > now]
        return min(future) if future else None

    def replace_exceptions(self, exceptions: Iterable[Exemption]) -> None:
        with self._lock:
            self._exceptions = {(e.namespace, e.name): e for e in exceptions}
            self._by_namespace = self._index()

    def put_exception(self, exception: Exemption) -> None:
        with self._lock:
            self._exceptions[(exception.namespace, exception.name)] = exception
            self._by_namespace = self._index()

    def remove_exception(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._exceptions.pop((namespace, name), None) is not None:
                self._by_namespace = self._index()

    def _index(self) -> dict[str, tuple[Exemption, ...]]:
        index: dict[str, list[Exemption]] = {}
        for (ns, _name), exc in sorted(self._exceptions.items()):
            index.setdefault(ns, []).append(exc)
        return {ns: tuple(excs) for ns, excs in index.items()}


class ExceptionWatch:
    """Reflector handler for MagTapeException objects (all namespaces)."""

    def __init__(self, state: EnforcementState, max_lifetime: timedelta) -> None:
        self._state = state
        self._max_lifetime = max_lifetime

    def _parse(self, obj: Obj) -> Exemption | None:
        try:
            return parse_exception(obj, max_lifetime=self._max_lifetime)
        except InvalidException as exc:
            log.warning("ignoring %s; fix or delete it (MagTape's webhook for %ss refuses "
                        "such objects, so it was created while the webhook was not answering)",
                        exc, "MagTapeException")
            return None

    def replace(self, objects: list[Obj]) -> None:
        parsed = (self._parse(o) for o in objects)
        self._state.replace_exceptions(e for e in parsed if e is not None)

    def apply(self, event_type: str, obj: Obj) -> None:
        meta = metadata(obj)
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        parsed = None if event_type == "DELETED" else self._parse(obj)
        if parsed is None:
            self._state.remove_exception(ns, name)
        else:
            self._state.put_exception(parsed)


class ConfigWatch:
    """Reflector handler for the overrides ConfigMap (one name in MagTape's namespace)."""

    def __init__(self, state: EnforcementState, name: str) -> None:
        self._state = state
        self.name = name
        self.last_error: str | None = None  # why the current document was refused, if it was

    def replace(self, objects: list[Obj]) -> None:
        mine = [o for o in objects if _name(o) == self.name]
        if mine:
            self._load(mine[0])
        else:
            self._state.set_config(EnforcementConfig())

    def apply(self, event_type: str, obj: Obj) -> None:
        if _name(obj) != self.name:
            return
        if event_type == "DELETED":
            log.info("ConfigMap %s deleted: enforcement overrides back to the defaults", self.name)
            self._state.set_config(EnforcementConfig())
        else:
            self._load(obj)

    def _load(self, obj: Obj) -> None:
        data = obj.get("data") or {}
        text = data.get(CONFIG_KEY, "") if isinstance(data, Mapping) else ""
        try:
            config = parse_config(str(text), f"ConfigMap {self.name} key {CONFIG_KEY}")
        except ConfigInvalid as exc:
            log.error("%s; keeping the previous enforcement overrides until it is fixed", exc)
            self.last_error = str(exc)
            return
        self.last_error = None
        self._state.set_config(config)
        log.info("enforcement overrides loaded from ConfigMap %s: %d check rule(s), "
                 "%d namespace rule(s)", self.name, len(config.checks), len(config.namespaces))


def _name(obj: Obj) -> str:
    return name(obj)
