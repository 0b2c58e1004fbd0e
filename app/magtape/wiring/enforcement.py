"""Feeds the enforcement state in a cluster: watches, the owners, and the reminders.

MagTapeException objects are followed in every namespace; the overrides
ConfigMap in MagTape's own namespace; the owners controllers derive objects
from (magtape.kube.owners) in every namespace. Each gates readiness until its
first list completes (magtape.wiring): a replica that answered before would
miss exceptions, overrides and owners, and deny what its ready peers let
through (a rollout's Pods, exempted objects). The informers keep the last
known state while the API server is unreachable. The enforcement package itself (core) holds no
client and no thread: this module connects it to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from datetime import timedelta

from magtape.enforcement.evaluator import Enforcer, NamespaceLabels, labels_from_data, no_labels
from magtape.enforcement.exceptions import API_GROUP, API_VERSION, PLURAL
from magtape.enforcement.inheritance import Inheritance
from magtape.enforcement.state import ConfigWatch, EnforcementState, ExceptionWatch
from magtape.engine.store import PolicyStore
from magtape.kube.informers import Informer, Informers
from magtape.kube.owners import OwnerIndex
from magtape.kube.rest import CONFIGMAPS, ResourceRef
from magtape.notify import Notifier
from magtape.policy import LoadReport
from magtape.settings import Settings
from magtape.wiring.reminders import ExpiryReminders

EXCEPTIONS = ResourceRef(f"{API_GROUP}/{API_VERSION}", PLURAL)


def build_enforcer(settings: Settings, store: PolicyStore | None) -> tuple[Enforcer,
                                                                          EnforcementState]:
    """The webhook's enforcer, fed by the policy store (check IDs, namespace labels)."""
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
    return Enforcer(state, settings.deny_level, namespace_labels=labels), state


def watch_enforcement(settings: Settings, informers: Informers, state: EnforcementState,
                      notifier: Notifier, stack: ExitStack) -> ConfigWatch:
    """Register the exception and overrides handlers; start the reminders when enabled
    (stopped by ``stack``). Returns the overrides' handler (its ``last_error``)."""
    exceptions, configmaps = enforcement_informers(settings, informers)
    exceptions.add(ExceptionWatch(state, timedelta(days=settings.exceptions.max_days)))
    config = ConfigWatch(state, settings.exceptions.enforcement_configmap)
    configmaps.add(config)
    if settings.exceptions.reminder_hours > 0:
        reminders = ExpiryReminders(state, notifier,
                                    timedelta(hours=settings.exceptions.reminder_hours),
                                    settings.deny_level)
        reminders.start()
        stack.callback(reminders.stop)
    return config


def enforcement_informers(settings: Settings,
                          informers: Informers) -> tuple[Informer, Informer]:
    """The informers :func:`watch_enforcement` feeds from, the exceptions' and the
    overrides ConfigMap's (readiness waits for them too)."""
    return (informers.informer(EXCEPTIONS),
            informers.informer(CONFIGMAPS, settings.identity.namespace))


def inherit_from_owners(settings: Settings, informers: Informers, enforcer: Enforcer,
                        stack: ExitStack) -> OwnerIndex | None:
    """Let controllers' objects inherit their owners' verdict (docs/exceptions.md):
    follow the owner kinds and give the enforcer the controller identities. None when
    ``MAGTAPE_CONTROLLER_IDENTITIES`` is ``none``."""
    controllers = frozenset(settings.exceptions.controller_identities)
    if not controllers:
        return None
    owners = OwnerIndex(informers, settings.exceptions.controller_owner_kinds,
                        probe_namespace=settings.identity.namespace)
    owners.start()
    stack.callback(owners.stop)
    enforcer.inheritance = Inheritance(controllers, owners)
    return owners
