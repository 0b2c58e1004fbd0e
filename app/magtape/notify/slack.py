"""Slack alerts: where they go, what they say, and how they are posted safely.

Targets are the operator's default incoming-webhook URL plus, when the
request's namespace has one, the URL in its Secret ``magtape-slack`` (key
``webhook-url``) — a "customer alert". A tenant controls that Secret, so its
URL must be https and point at an allowed host (``MAGTAPE_SLACK_ALLOWED_HOSTS``),
otherwise MagTape would post cluster data wherever a tenant asks.
``MAGTAPE_SLACK_WEBHOOK_URL_BASE`` then replaces the host of every target
(airgapped clusters post to a forwarder), keeping scheme and path.

A webhook URL is a credential: it never appears in a log line. Our own
messages name the target by origin and host only, exceptions are logged by
type, and urllib3's debug/retry lines are redacted while a post is in flight
(see :class:`RedactWebhookUrls`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from magtape.metrics import Channel, Metrics
from magtape.settings import Settings

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

    from magtape.decision import Outcome

log = logging.getLogger(__name__)

SECRET_NAME = "magtape-slack"
SECRET_KEY = "webhook-url"
PRETEXT_DENIED = "MagTape | Policy Denial Detected"
PRETEXT_FAILURES = "MagTape | Policy Failures Detected"

# A namespace's Secret is read at most once per this many seconds (also when
# it is absent), so a burst of failures in one namespace costs one API call.
SECRET_CACHE_SECONDS = 60.0
SECRET_CACHE_MAX_NAMESPACES = 1024
# Retries on 429/5xx: a bounded number, exponential back-off, and a server's
# Retry-After honoured up to a cap, so one alert holds the Slack worker for
# seconds, not for as long as a server asks.
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_TOTAL = 3
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX_SECONDS = 4.0
RETRY_AFTER_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    """One webhook to post an alert to."""

    url: str = field(repr=False)  # a credential
    customer: bool  # True: from the namespace's Secret
    origin: str  # how logs name it: "default webhook" or "Secret <ns>/magtape-slack"

    def describe(self) -> str:
        return f"{self.origin} (host {urlsplit(self.url).hostname or '?'})"


# -- target resolution -------------------------------------------------------


def base_netloc(base: str) -> str:
    """The ``host[:port]`` of ``MAGTAPE_SLACK_WEBHOOK_URL_BASE`` (a host or a URL)."""
    if not base:
        return ""
    return urlsplit(base if "://" in base else f"//{base}").netloc


def rewrite_host(url: str, netloc: str) -> str:
    """``url`` with its host[:port] replaced by ``netloc`` (no change when empty)."""
    if not netloc:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def refusal(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Why a tenant's webhook URL may not be used, or None when it is acceptable."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme != "https":
        return f"its scheme is {parts.scheme or 'missing'!r}, only https is accepted"
    if not host:
        return "it has no host"
    if parts.username is not None or parts.password is not None:
        return "it carries credentials before the host"
    if host.lower() not in allowed_hosts:
        return (f"host {host!r} is not in MAGTAPE_SLACK_ALLOWED_HOSTS "
                f"({', '.join(sorted(allowed_hosts))})")
    return None


class TenantWebhooks:
    """Reads (and briefly caches) the webhook URL in each namespace's Secret."""

    def __init__(self, api_client: Any, timeout_seconds: float = 5.0,
                 ttl_seconds: float = SECRET_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes.client import CoreV1Api

        self._api = CoreV1Api(api_client)
        self._timeout = timeout_seconds
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def url_for(self, namespace: str) -> str | None:
        if not namespace:
            return None
        now = self._clock()
        with self._lock:
            cached = self._cache.get(namespace)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        url = self._read(namespace)
        with self._lock:
            self._cache[namespace] = (now, url)
            self._cache.move_to_end(namespace)
            while len(self._cache) > SECRET_CACHE_MAX_NAMESPACES:
                self._cache.popitem(last=False)
        return url

    def _read(self, namespace: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        where = f"Secret {namespace}/{SECRET_NAME}"
        try:
            secret = self._api.read_namespaced_secret(SECRET_NAME, namespace,
                                                      _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not read %s (HTTP %s %s); alerting the default webhook only. "
                            "Check MagTape's RBAC allows get on secrets named %s",
                            where, exc.status, exc.reason, SECRET_NAME)
            return None
        except Exception as exc:
            log.warning("could not read %s (%s); alerting the default webhook only",
                        where, type(exc).__name__)
            return None
        raw = (secret.data or {}).get(SECRET_KEY)
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


# -- payload -----------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its API asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_payload(outcome: Outcome, *, cluster: str, username: str, icon: str,
                  customer: bool) -> dict[str, Any]:
    """The incoming-webhook JSON for one outcome (see docs/notifications.md)."""
    review = outcome.review
    denied = not outcome.allowed
    fields = [
        ("Cluster", cluster, True),
        ("Namespace", review.namespace, True),
        ("MagTape Deny Level", outcome.deny_level.value, True),
        ("Workload", f"{review.kind.lower()}/{review.name}", False),
        ("User", review.username, False),
        ("Customer Alert", str(customer), True),
    ]
    return {
        "username": username,
        "icon_emoji": icon,
        "attachments": [{
            "color": "danger" if denied else "warning",
            "pretext": PRETEXT_DENIED if denied else PRETEXT_FAILURES,
            "fallback": _escape(f'MagTape detected failures for {review.kind} "{review.name}" '
                                f'in namespace "{review.namespace}" on cluster "{cluster}"'),
            "text": "\n".join(_escape(m) for m in outcome.decision.messages),
            "fields": [{"title": t, "value": _escape(v), "short": s} for t, v, s in fields],
        }],
    }


# -- posting -----------------------------------------------------------------


class _BoundedRetry(Retry):
    """urllib3's Retry with the server's Retry-After capped."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, RETRY_AFTER_MAX_SECONDS)


def retry_policy(backoff_factor: float = RETRY_BACKOFF_FACTOR) -> Retry:
    return _BoundedRetry(
        total=RETRY_TOTAL,
        connect=2,  # nothing was sent: safe to try again
        read=0,  # the post may have arrived: do not risk a duplicate alert
        other=0,
        redirect=0,
        status=RETRY_TOTAL,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"POST"}),
        backoff_factor=backoff_factor,
        backoff_max=RETRY_BACKOFF_MAX_SECONDS,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last answer so its status is logged
    )


def describe_error(exc: BaseException) -> str:
    """Exception type names, outer and root cause: str(exc) would name the URL."""
    names = [type(exc).__name__]
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError) and cause.reason is not None:
        names.append(type(cause.reason).__name__)
    return " / ".join(names)


_in_flight = threading.local()


@contextlib.contextmanager
def _redacting(url: str) -> Iterator[None]:
    """While posting to ``url`` on this thread, scrub it from urllib3's log records."""
    parts = urlsplit(url)
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    # Longest first, and as requests re-quotes them, so no fragment survives.
    variants = {url, requote_uri(url), path, requote_uri(path), parts.path}
    _in_flight.secrets = tuple(sorted((v for v in variants if len(v) > 1), key=len,
                                      reverse=True))
    try:
        yield
    finally:
        _in_flight.secrets = ()


class RedactWebhookUrls(logging.Filter):
    """Removes the webhook URL being posted from urllib3's own log records.

    urllib3 logs request paths (at DEBUG, and at WARNING when it retries a
    broken connection); for a Slack webhook the path *is* the secret.
    """

    LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
               "urllib3.util.retry")

    def filter(self, record: logging.LogRecord) -> bool:
        secrets: tuple[str, ...] = getattr(_in_flight, "secrets", ())
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: say nothing rather than leak
                message = f"{record.name}: (message withheld during a Slack post)"
            for secret in secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, None
        return True

    @classmethod
    def install(cls) -> None:
        for name in cls.LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())


class SlackSender:
    """The Slack :class:`~magtape.notify.dispatcher.Sink`: resolves targets and posts."""

    channel: Channel = "slack"

    def __init__(self, settings: Settings, metrics: Metrics,
                 tenants: TenantWebhooks | None = None, verify: bool | str = True,
                 retry: Retry | None = None) -> None:
        """``verify``: True (system CAs, or ``REQUESTS_CA_BUNDLE``), or a CA bundle path."""
        self._settings = settings
        self._metrics = metrics
        self._tenants = tenants
        self._verify = verify
        self._allowed = settings.slack_allowed_host_set
        self._netloc = base_netloc(settings.slack_webhook_url_base)
        if settings.slack_webhook_url_base and not self._netloc:
            log.error("MAGTAPE_SLACK_WEBHOOK_URL_BASE=%r has no host; ignoring it",
                      settings.slack_webhook_url_base)
        timeout = settings.slack_timeout_seconds
        self._timeout = (timeout, timeout)  # (connect, read) per attempt
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry or retry_policy(), pool_maxsize=4)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        RedactWebhookUrls.install()

    def targets(self, namespace: str) -> list[Target]:
        """Where an alert for ``namespace`` goes; a refused tenant URL is counted and logged."""
        targets: list[Target] = []
        if self._settings.slack_webhook_url_default:
            targets.append(Target(self._settings.slack_webhook_url_default, customer=False,
                                  origin="default webhook"))
        tenant_url = self._tenants.url_for(namespace) if self._tenants is not None else None
        if tenant_url is not None:
            origin = f"Secret {namespace}/{SECRET_NAME}"
            reason = refusal(tenant_url, self._allowed)
            if reason is not None:
                self._metrics.notification("slack", "refused")
                log.warning("refused the Slack webhook URL in %s: %s. Fix the Secret's %r key "
                            "or ask an administrator to allow the host", origin, reason,
                            SECRET_KEY)
            elif all(t.url != tenant_url for t in targets):
                targets.append(Target(tenant_url, customer=True, origin=origin))
        return [Target(rewrite_host(t.url, self._netloc), t.customer, t.origin)
                for t in targets]

    def deliver(self, outcome: Outcome) -> None:
        review = outcome.review
        for target in self.targets(review.namespace):
            payload = build_payload(outcome, cluster=self._settings.cluster_name,
                                    username=self._settings.slack_user,
                                    icon=self._settings.slack_icon, customer=target.customer)
            what = f"{review.kind} {review.namespace}/{review.name}"
            self._post(target, payload, what)

    def _post(self, target: Target, payload: dict[str, Any], what: str) -> None:
        try:
            with _redacting(target.url):
                response = self._session.post(target.url, json=payload, timeout=self._timeout,
                                              verify=self._verify, allow_redirects=False)
                response.close()
        except requests.RequestException as exc:
            self._metrics.notification("slack", "failed")
            log.warning("Slack alert for %s to %s failed: %s", what, target.describe(),
                        describe_error(exc))
            return
        if 200 <= response.status_code < 300:
            self._metrics.notification("slack", "sent")
            log.debug("Slack alert for %s sent to %s", what, target.describe())
        else:
            self._metrics.notification("slack", "failed")
            log.warning("Slack alert for %s to %s failed: HTTP %d after retries", what,
                        target.describe(), response.status_code)

    def close(self) -> None:
        self._session.close()
