"""Configuration: one frozen dataclass built once from the environment.

Nothing else in MagTape reads ``os.environ``. Every variable is parsed here,
and a bad value stops start-up with one line naming the variable, the value
and what is accepted (``ConfigError``), never a silent default. Variable names
follow the original MagTape where it had one; docs/configuration.md lists them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from magtape.policy import DenyLevel

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names variable and value."""


class FailurePolicy(enum.Enum):
    """What to answer when the engine cannot evaluate a request."""

    FAIL = "Fail"
    IGNORE = "Ignore"


class EngineKind(enum.Enum):
    EMBEDDED = "embedded"
    OPA = "opa"


class LogLevel(enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    # Decisions
    deny_level: DenyLevel = DenyLevel.LOW
    engine: EngineKind = EngineKind.EMBEDDED
    engine_failure_policy: FailurePolicy = FailurePolicy.FAIL
    engine_timeout_seconds: float = 3.0
    opa_url: str = "http://127.0.0.1:8181"
    policy_dirs: tuple[str, ...] = ()  # empty: the built-in policies
    data_files: tuple[str, ...] = ()
    # Identity (Events, Slack fields, /healthz)
    log_level: LogLevel = LogLevel.INFO
    cluster_name: str = "kubernetes"
    pod_name: str = "magtape"
    namespace_name: str = "magtape-system"
    # HTTP
    listen: Address = Address("127.0.0.1", 5000)
    metrics_listen: Address = Address("127.0.0.1", 9090)
    # Admission work is CPU-bound (no I/O on the request path), so more threads
    # than about twice the cores only add GIL contention (see docs/performance.md).
    threads: int = 4
    max_body_bytes: int = 3 * 1024 * 1024
    keep_managed_fields: bool = False  # policies see metadata.managedFields
    # Notifications
    k8s_events_enabled: bool = True
    slack_enabled: bool = False
    slack_passive: bool = False
    slack_webhook_url_default: str = field(default="", repr=False)  # a secret: never logged
    slack_user: str = "mtbot"
    slack_icon: str = ":rotating_light:"
    slack_webhook_url_base: str = ""
    slack_allowed_hosts: tuple[str, ...] = ("hooks.slack.com",)
    slack_timeout_seconds: float = 5.0
    alert_dedup_seconds: float = 600.0
    notify_queue_size: int = 1000
    # In-cluster runtime
    policy_discovery: bool = False
    policy_namespace: str = ""  # empty: namespace_name
    policy_selector: str = "openpolicyagent.org/policy=rego"
    replicate_kinds: tuple[str, ...] = ()  # besides namespaces, e.g. "v1/services"
    tls_secret_name: str = "magtape-tls"
    tls_cert_file: str = ""  # serving cert read for the expiry metric
    service_name: str = "magtape-svc"
    webhook_name: str = "magtape-webhook"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``environ``; raise ConfigError on the first bad value."""
        e = _Env(environ)
        # MAGTAPE_DENY_VOLUME is the original's alias; MAGTAPE_DENY_LEVEL wins when both are set.
        deny_var = ("MAGTAPE_DENY_LEVEL" if "MAGTAPE_DENY_LEVEL" in environ
                    else "MAGTAPE_DENY_VOLUME")
        d = cls()
        return cls(
            deny_level=e.enum(deny_var, DenyLevel, d.deny_level),
            engine=e.enum("MAGTAPE_POLICY_ENGINE", EngineKind, d.engine),
            engine_failure_policy=e.enum("MAGTAPE_ENGINE_FAILURE_POLICY", FailurePolicy,
                                         d.engine_failure_policy),
            engine_timeout_seconds=e.number("MAGTAPE_ENGINE_TIMEOUT_SECONDS",
                                            d.engine_timeout_seconds, minimum=0.01),
            opa_url=e.url("MAGTAPE_OPA_URL", d.opa_url),
            policy_dirs=e.list("MAGTAPE_POLICY_DIRS", d.policy_dirs),
            data_files=e.list("MAGTAPE_DATA_FILES", d.data_files),
            log_level=e.enum("MAGTAPE_LOG_LEVEL", LogLevel, d.log_level),
            cluster_name=e.text("MAGTAPE_CLUSTER_NAME", d.cluster_name),
            pod_name=e.text("MAGTAPE_POD_NAME", d.pod_name),
            namespace_name=e.text("MAGTAPE_NAMESPACE_NAME", d.namespace_name),
            listen=e.address("MAGTAPE_LISTEN", d.listen),
            metrics_listen=e.address("MAGTAPE_METRICS_LISTEN", d.metrics_listen),
            threads=int(e.number("MAGTAPE_THREADS", d.threads, minimum=1, integer=True)),
            max_body_bytes=int(e.number("MAGTAPE_MAX_BODY_BYTES", d.max_body_bytes,
                                        minimum=1024, integer=True)),
            keep_managed_fields=e.boolean("MAGTAPE_KEEP_MANAGED_FIELDS", d.keep_managed_fields),
            k8s_events_enabled=e.boolean("MAGTAPE_K8S_EVENTS_ENABLED", d.k8s_events_enabled),
            slack_enabled=e.boolean("MAGTAPE_SLACK_ENABLED", d.slack_enabled),
            slack_passive=e.boolean("MAGTAPE_SLACK_PASSIVE", d.slack_passive),
            slack_webhook_url_default=e.url("MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT",
                                            d.slack_webhook_url_default, secret=True),
            slack_user=e.text("MAGTAPE_SLACK_USER", d.slack_user),
            slack_icon=e.text("MAGTAPE_SLACK_ICON", d.slack_icon),
            slack_webhook_url_base=e.text("MAGTAPE_SLACK_WEBHOOK_URL_BASE",
                                          d.slack_webhook_url_base),
            slack_allowed_hosts=e.list("MAGTAPE_SLACK_ALLOWED_HOSTS", d.slack_allowed_hosts),
            slack_timeout_seconds=e.number("MAGTAPE_SLACK_TIMEOUT_SECONDS",
                                           d.slack_timeout_seconds, minimum=0.1),
            alert_dedup_seconds=e.number("MAGTAPE_ALERT_DEDUP_SECONDS", d.alert_dedup_seconds,
                                         minimum=0),
            notify_queue_size=int(e.number("MAGTAPE_NOTIFY_QUEUE_SIZE", d.notify_queue_size,
                                           minimum=1, integer=True)),
            policy_discovery=e.boolean("MAGTAPE_POLICY_DISCOVERY", d.policy_discovery),
            policy_namespace=e.text("MAGTAPE_POLICY_NAMESPACE", d.policy_namespace),
            policy_selector=e.text("MAGTAPE_POLICY_SELECTOR", d.policy_selector),
            replicate_kinds=e.list("MAGTAPE_REPLICATE", d.replicate_kinds),
            tls_secret_name=e.text("MAGTAPE_TLS_SECRET", d.tls_secret_name),
            tls_cert_file=e.text("MAGTAPE_TLS_CERT_FILE", d.tls_cert_file),
            service_name=e.text("MAGTAPE_SERVICE_NAME", d.service_name),
            webhook_name=e.text("MAGTAPE_WEBHOOK_NAME", d.webhook_name),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with command-line flags applied over the environment."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def effective_policy_namespace(self) -> str:
        return self.policy_namespace or self.namespace_name

    @property
    def slack_allowed_host_set(self) -> frozenset[str]:
        """Hosts a tenant's Slack URL may point at (plus the base-override host)."""
        from urllib.parse import urlsplit

        hosts = {h.lower() for h in self.slack_allowed_hosts}
        if self.slack_webhook_url_base:
            base = self.slack_webhook_url_base
            host = urlsplit(base if "://" in base else f"https://{base}").hostname
            if host:
                hosts.add(host.lower())
        return frozenset(hosts)


class _Env:
    """Typed readers over the environment; each raises ConfigError naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T], accepted: str,
               secret: bool = False) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, KeyError):
            shown = "<redacted>" if secret else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: accepted {accepted}") from None

    def text(self, name: str, default: str) -> str:
        return self._parse(name, default, str, "any text")

    def enum(self, name: str, enum_type: type[enum.Enum], default: Any) -> Any:
        by_name = {m.value.upper(): m for m in enum_type}
        accepted = ", ".join(m.value for m in enum_type)
        return self._parse(name, default, lambda raw: by_name[raw.upper()], accepted)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)

        return self._parse(name, default, parse, "TRUE/true/1/yes or FALSE/false/0/no")

    def number(self, name: str, default: float, minimum: float, integer: bool = False) -> float:
        def parse(raw: str) -> float:
            value = float(int(raw)) if integer else float(raw)
            if not value >= minimum:  # also rejects NaN
                raise ValueError(raw)
            return value

        kind = "a whole number" if integer else "a number"
        return self._parse(name, default, parse, f"{kind} >= {minimum:g}")

    def list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in raw.split(",") if p.strip())

        return self._parse(name, default, parse, "a comma-separated list")

    def url(self, name: str, default: str, secret: bool = False) -> str:
        def parse(raw: str) -> str:
            from urllib.parse import urlsplit

            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(raw)
            return raw

        return self._parse(name, default, parse, "an http:// or https:// URL", secret=secret)

    def address(self, name: str, default: Address) -> Address:
        return self._parse(name, default, parse_address, "HOST:PORT with PORT 0-65535")


def parse_address(raw: str) -> Address:
    """Parse ``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces)."""
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise ValueError(raw)
    host = host.strip("[]") or "0.0.0.0"
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(raw)
    return Address(host, port)
