"""Slack targets: where an alert goes, and which tenant URLs may be used at all.

Targets are the operator's default incoming-webhook URL plus, when the
request's namespace has one, the URL in its Secret ``magtape-slack`` (key
``webhook-url``), a "customer alert". A tenant controls that Secret, so its
URL must be https, point at an allowed host (``MAGTAPE_SLACK_ALLOWED_HOSTS``)
and an allowed port (``MAGTAPE_SLACK_ALLOWED_PORTS``, 443 unless configured),
otherwise MagTape would post cluster data wherever a tenant asks.
``MAGTAPE_SLACK_WEBHOOK_URL_BASE`` then replaces the host of every target
(airgapped clusters post to a forwarder), keeping scheme and path. Only
namespaces that exist and opted in are notified at all (the dispatcher checks,
see magtape.namespaces).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from magtape.text import NAME_MAX, clean
from magtape.ttlcache import TtlCache

log = logging.getLogger(__name__)

SECRET_NAME = "magtape-slack"
SECRET_KEY = "webhook-url"
# A namespace's Secret is read at most once per this many seconds (also when
# it is absent), so a burst of failures in one namespace costs one API call.
SECRET_CACHE_SECONDS = 60.0
SECRET_CACHE_MAX_NAMESPACES = 1024
# A URL is at most this long (a Slack webhook URL is about 80 characters).
URL_MAX = 2048


@dataclass(frozen=True)
class Target:
    """One webhook to post an alert to."""

    url: str = field(repr=False)  # a credential
    customer: bool  # True: from the namespace's Secret
    origin: str  # how logs name it: "default webhook" or "Secret <ns>/magtape-slack"

    def describe(self) -> str:
        return f"{self.origin} (host {clean(urlsplit(self.url).hostname or '?', NAME_MAX)})"


def rewrite_host(url: str, netloc: str) -> str:
    """``url`` with its host[:port] replaced by ``netloc`` (no change when empty)."""
    if not netloc:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def refusal(url: str, allowed_hosts: Collection[str],
            allowed_ports: Collection[int] = (443,)) -> str | None:
    """Why a tenant's webhook URL may not be used, or None when it is acceptable."""
    if len(url) > URL_MAX:
        return f"it is longer than {URL_MAX} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = 443 if parts.port is None else parts.port  # ":0" is port 0, refused
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme != "https":
        return f"its scheme is {clean(parts.scheme or 'missing', 16)!r}, only https is accepted"
    if not host:
        return "it has no host"
    if parts.username is not None or parts.password is not None:
        return "it carries credentials before the host"
    if host.lower() not in allowed_hosts:
        return (f"host {clean(host, NAME_MAX)!r} is not in MAGTAPE_SLACK_ALLOWED_HOSTS "
                f"({', '.join(sorted(allowed_hosts))})")
    if port not in allowed_ports:
        return (f"port {port} is not in MAGTAPE_SLACK_ALLOWED_PORTS "
                f"({', '.join(str(p) for p in sorted(allowed_ports))})")
    return None


class TenantWebhooks:
    """Reads (and briefly caches) the webhook URL in each namespace's Secret."""

    def __init__(self, api_client: Any, timeout_seconds: float = 5.0,
                 ttl_seconds: float = SECRET_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from magtape.kube.rest import RawApi

        self._api = RawApi(api_client, timeout_seconds)
        self._cache: TtlCache[str, str | None] = TtlCache(
            ttl_seconds, SECRET_CACHE_MAX_NAMESPACES, clock)

    def url_for(self, namespace: str) -> str | None:
        if not namespace:
            return None
        found, url = self._cache.lookup(namespace)
        if found:
            return url
        url = self._read(namespace)
        self._cache.put(namespace, url)  # absent too: a burst costs one read
        return url

    def _read(self, namespace: str) -> str | None:
        from magtape.kube.rest import SECRETS, KubeError

        where = f"Secret {clean(namespace, NAME_MAX)}/{SECRET_NAME}"
        try:
            secret = self._api.get(SECRETS, SECRET_NAME, namespace)
        except KubeError as exc:  # HTTP errors, and an unreachable API server (status 0)
            if exc.status == 0:
                log.warning("could not read %s (the API server is unreachable: %s); alerting "
                            "the default webhook only", where, exc.message)
            elif not exc.not_found:
                log.warning("could not read %s (HTTP %s %s); alerting the default webhook "
                            "only. Check MagTape's RBAC allows get on secrets named %s",
                            where, exc.status, exc.reason, SECRET_NAME)
            return None
        raw = (secret.get("data") or {}).get(SECRET_KEY)
        if not raw:
            log.warning("%s has no key %r; alerting the default webhook only", where, SECRET_KEY)
            return None
        try:
            url = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            log.warning("%s key %r is not base64-encoded UTF-8 text; ignoring it",
                        where, SECRET_KEY)
            return None
        return url or None




class TargetResolver:
    """Where an alert for a namespace goes; a refused tenant URL is counted and logged."""

    def __init__(self, default_url: str, tenants: TenantWebhooks | None,
                 allowed_hosts: Collection[str], allowed_ports: Collection[int],
                 base_netloc: str, on_refused: Callable[[], None]) -> None:
        self._default = default_url
        self._tenants = tenants
        self._hosts = allowed_hosts
        self._ports = allowed_ports
        self._netloc = base_netloc
        self._on_refused = on_refused

    def targets(self, namespace: str) -> list[Target]:
        targets: list[Target] = []
        if self._default:
            targets.append(Target(self._default, customer=False, origin="default webhook"))
        tenant_url = self._tenants.url_for(namespace) if self._tenants is not None else None
        if tenant_url is not None:
            origin = f"Secret {clean(namespace, NAME_MAX)}/{SECRET_NAME}"
            reason = refusal(tenant_url, self._hosts, self._ports)
            if reason is not None:
                self._on_refused()
                log.warning("refused the Slack webhook URL in %s: %s. Fix the Secret's %r key "
                            "or ask an administrator to allow the host", origin, reason,
                            SECRET_KEY)
            elif all(t.url != tenant_url for t in targets):
                targets.append(Target(tenant_url, customer=True, origin=origin))
        return [Target(rewrite_host(t.url, self._netloc), t.customer, t.origin)
                for t in targets]
