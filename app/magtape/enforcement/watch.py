"""Keeps the enforcement state current in a cluster: reflectors and the reminders.

MagTapeException objects are listed and watched in every namespace; the
overrides ConfigMap in MagTape's own namespace; the owners controllers
derive objects from (magtape.kube.owners) in every namespace. None gates readiness:
until the first list completes, no exception applies and the defaults hold,
which errs on the side of enforcing. The reflector keeps the last known state
while the API server is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from magtape.background import Backoff
from magtape.enforcement.evaluator import Enforcer, NamespaceLabels, labels_from_data, no_labels
from magtape.enforcement.exceptions import API_GROUP, API_VERSION, PLURAL
from magtape.enforcement.inheritance import Inheritance
from magtape.enforcement.reminders import ExpiryReminders
from magtape.enforcement.state import ConfigWatch, EnforcementState, ExceptionWatch
from magtape.engine.store import PolicyStore
from magtape.kube.owners import OwnerCache
from magtape.kube.reflector import Reflector
from magtape.kube.rest import CONFIGMAPS, RawApi, ResourceRef
from magtape.notify import Notifier
from magtape.policy import LoadReport
from magtape.settings import Settings

log = logging.getLogger(__name__)

EXCEPTIONS = ResourceRef(f"{API_GROUP}/{API_VERSION}", PLURAL)


@dataclass
class EnforcementWatch:
    reflectors: list[Reflector] = field(default_factory=list)
    reminders: ExpiryReminders | None = None
    config: ConfigWatch | None = None
    owners: OwnerCache | None = None

    def stop(self) -> None:
        for r in self.reflectors:
            r.stop()
        if self.owners is not None:
            self.owners.stop()
        if self.reminders is not None:
            self.reminders.stop()


def start_enforcement(settings: Settings, store: PolicyStore | None, api_client: Any | None,
                      notifier: Notifier) -> tuple[Enforcer, EnforcementWatch]:
    """The webhook's enforcer, fed by the policy store (check IDs, namespace labels) and,
    with a cluster, by the exception and overrides watchers."""
    state = EnforcementState()
    labels: NamespaceLabels = no_labels
    if store is not None:
        def record(report: LoadReport, _modules: object = None) -> None:
            state.set_known_checks(p.errcode for p in report.policies)

        if store.last_report is not None:
            record(store.last_report)
        store.add_listener(record)

        def labels_in_store(namespace: str) -> Mapping[str, str] | None:
            return labels_from_data(store.data(), namespace)

        labels = labels_in_store
    controllers = frozenset(settings.exceptions.controller_identities)
    if api_client is None:
        return Enforcer(state, settings.deny_level, namespace_labels=labels), EnforcementWatch()
    watch = start_watching(settings, api_client, state, notifier)
    if controllers:
        watch.owners = OwnerCache(RawApi(api_client), settings.exceptions.controller_owner_kinds,
                                  probe_namespace=settings.identity.namespace)
        watch.owners.start()
    inheritance = (Inheritance(controllers, watch.owners) if watch.owners is not None
                   else None)
    return Enforcer(state, settings.deny_level, namespace_labels=labels,
                    inheritance=inheritance), watch


def start_watching(settings: Settings, api_client: Any, state: EnforcementState,
                   notifier: Notifier, *, watch_timeout_seconds: int = 300,
                   backoff_max_seconds: float = 30.0) -> EnforcementWatch:
    """Start the exception and overrides reflectors (and reminders when enabled)."""
    api = RawApi(api_client)
    watch = EnforcementWatch()
    max_lifetime = timedelta(days=settings.exceptions.max_days)
    watch.reflectors.append(Reflector(
        api, EXCEPTIONS, ExceptionWatch(state, max_lifetime),
        watch_timeout_seconds=watch_timeout_seconds, backoff=Backoff(0.5, backoff_max_seconds)))
    watch.config = ConfigWatch(state, settings.exceptions.enforcement_configmap)
    watch.reflectors.append(Reflector(
        api, CONFIGMAPS, watch.config,
        namespace=settings.identity.namespace, watch_timeout_seconds=watch_timeout_seconds,
        backoff=Backoff(0.5, backoff_max_seconds)))
    for r in watch.reflectors:
        r.start()
    if settings.exceptions.reminder_hours > 0:
        watch.reminders = ExpiryReminders(state, notifier,
                                          timedelta(hours=settings.exceptions.reminder_hours),
                                          settings.deny_level)
        watch.reminders.start()
    return watch
