"""Builds the notifier the server injects, from settings and the optional API client.

The one place that decides which channels exist: Events need a cluster,
Slack needs a default URL or a cluster to read namespaces' Secrets from. Each
channel that cannot work says so once, here, at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

from magtape.metrics import Metrics
from magtape.namespaces import NamespaceDirectory
from magtape.notify import Notifier, NullNotifier
from magtape.notify.dispatcher import Dispatcher
from magtape.notify.events import EventRecorder
from magtape.notify.slack import SlackSender
from magtape.notify.slack_targets import TenantWebhooks
from magtape.remediation import remedies_for
from magtape.settings import DEFAULT_CONTROLLER_IDENTITIES, Settings

log = logging.getLogger(__name__)


def build_notifier(settings: Settings, api_client: Any | None, metrics: Metrics, *,
                   slack_verify: bool | str = True,
                   namespaces: NamespaceDirectory | None = None) -> Notifier:
    """The dispatcher for the enabled channels, or a NullNotifier when none is.

    ``api_client`` is a ``kubernetes.client.ApiClient`` or None (no cluster).
    ``slack_verify``: TLS verification for Slack posts (True, or a CA bundle path).
    ``namespaces``: the cluster's namespaces; only opted-in ones are notified.
    """
    events = None
    if settings.notify.events_enabled:
        if api_client is None:
            log.info("Kubernetes Events are off: no cluster configuration was found "
                     "(set MAGTAPE_K8S_EVENTS_ENABLED=false to silence this line)")
        else:
            events = EventRecorder(api_client, settings.identity.pod, metrics,
                                   remedies=remedies_for(settings))
    slack = None
    if settings.slack.enabled:
        if not settings.slack.default_url and api_client is None:
            log.warning("Slack alerts are off: MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT is empty and "
                        "there is no cluster to read namespaces' %r Secrets from",
                        "magtape-slack")
        else:
            tenants = TenantWebhooks(api_client, settings.slack.timeout_seconds) \
                if api_client is not None else None
            slack = SlackSender(settings, metrics, tenants, verify=slack_verify)
    if events is None and slack is None:
        return NullNotifier()
    log.info("notifications: Events %s, Slack %s%s", "on" if events else "off",
             "on" if slack else "off",
             " (passive: also for allowed requests)" if slack and settings.slack.passive else "")
    return Dispatcher(metrics, events=events, slack=slack, slack_passive=settings.slack.passive,
                      queue_size=settings.notify.queue_size,
                      dedup_seconds=settings.notify.dedup_seconds, namespaces=namespaces,
                      # Inheritance may be off ("none"); the controllers still send their Pods.
                      controllers=(settings.exceptions.controller_identities
                                   or DEFAULT_CONTROLLER_IDENTITIES))
