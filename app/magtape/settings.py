"""Configuration: one frozen settings object, grouped by concern, built once from the environment.

Nothing else in MagTape reads ``os.environ``. Every variable is parsed here,
and a bad value stops start-up with one line naming the variable, the value
and what is accepted (``ConfigError``), never a silent default. Variable names
follow the original MagTape where it had one; docs/configuration.md lists them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from magtape.podsecurity import (
    LATEST,
    SETTING_LEVELS,
    VERSION_ACCEPTED,
    Level,
    PodSecurity,
    parse_version,
)
from magtape.policy import DenyLevel
from magtape.remediation import DEFAULT_DOCS_URL

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


class AuditMode(enum.Enum):
    """``MAGTAPE_AUDIT``: run the background audit in this process (docs/audit.md)."""

    OFF = "off"
    ON = "on"


class AuditScope(enum.Enum):
    """``MAGTAPE_AUDIT_NAMESPACES``: which namespaces the audit reports on."""

    OPTED_IN = "opted-in"  # those the webhook's namespaceSelector sends to MagTape
    ALL = "all"


class LogLevel(enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

# HTTP threads per process at most (MAGTAPE_THREADS, --threads).
MAX_THREADS = 256


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class KindRef:
    """A collection named in ``MAGTAPE_REPLICATE``: ``v1/services``, ``apps/v1/deployments``."""

    group_version: str
    plural: str

    @classmethod
    def parse(cls, text: str) -> KindRef:
        """``<version>/<plural>`` (core) or ``<group>/<version>/<plural>``; never Secrets."""
        parts = text.strip().strip("/").split("/")
        if len(parts) == 2 and all(parts):
            ref = cls(parts[0], parts[1].lower())
        elif len(parts) == 3 and all(parts):
            ref = cls(f"{parts[0]}/{parts[1]}", parts[2].lower())
        else:
            raise ValueError(text)
        if ref.plural == "secrets":  # credentials would reach every policy's data
            raise ValueError(text)
        return ref

    def __str__(self) -> str:
        return f"{self.group_version}/{self.plural}"


# kube-controller-manager's controllers that create objects on behalf of an
# owner, as they authenticate with --use-service-account-credentials (kubeadm
# and most distributions), and the controller manager's own user without it.
DEFAULT_CONTROLLER_IDENTITIES = (
    *(f"system:serviceaccount:kube-system:{name}-controller"
      for name in ("deployment", "replicaset", "statefulset", "daemon-set", "job", "cronjob",
                   "replication")),
    "system:kube-controller-manager")
# Their owners' kinds. CronJob is batch/v1 from Kubernetes 1.21; 1.20 serves
# it as batch/v1beta1 only (the owner cache uses whichever is served).
DEFAULT_CONTROLLER_OWNER_KINDS = tuple(KindRef.parse(text) for text in (
    "apps/v1/deployments", "apps/v1/replicasets", "apps/v1/statefulsets",
    "apps/v1/daemonsets", "batch/v1/jobs", "batch/v1/cronjobs", "v1/replicationcontrollers"))


@dataclass(frozen=True)
class EngineSettings:
    """What evaluates the policies, and which policies and data it loads."""

    kind: EngineKind = EngineKind.EMBEDDED
    failure_policy: FailurePolicy = FailurePolicy.FAIL
    # Hard deadline per evaluation, well under the webhook's 3 s timeoutSeconds.
    timeout_seconds: float = 2.0
    workers: int = 2  # regorus worker processes (embedded engine)
    memory_mb: int = 192  # address-space cap per worker process (RLIMIT_AS)
    compiled: bool = True  # regorus' compiled mode for the proven built-in policies
    opa_url: str = "http://127.0.0.1:8181"
    policy_dirs: tuple[str, ...] = ()  # empty: the built-in policies
    data_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentitySettings:
    """Who this process is: named in Events, Slack fields and /healthz."""

    cluster: str = "kubernetes"
    pod: str = "magtape"
    namespace: str = "magtape-system"


@dataclass(frozen=True)
class HttpSettings:
    """The admission and metrics listeners and what a request may carry."""

    listen: Address = Address("127.0.0.1", 5000)
    metrics_listen: Address = Address("127.0.0.1", 9090)
    # Admission work is CPU-bound (no I/O on the request path), so more threads
    # than about twice the cores only add GIL contention (see docs/performance.md).
    threads: int = 4
    # HTTP processes per pod, each a whole webhook sharing the admission port
    # (magtape.processes): one per CPU the pod may use.
    processes: int = 1
    max_body_bytes: int = 3 * 1024 * 1024
    keep_managed_fields: bool = False  # policies see metadata.managedFields


@dataclass(frozen=True)
class NotifySettings:
    """The background notification queue and the channels besides Slack."""

    events_enabled: bool = True  # Kubernetes Events
    queue_size: int = 1000
    dedup_seconds: float = 600.0  # the same alert is sent once per this window


@dataclass(frozen=True)
class SlackSettings:
    enabled: bool = False
    passive: bool = False
    default_url: str = field(default="", repr=False)  # a secret: never logged
    user: str = "mtbot"
    icon: str = ":rotating_light:"
    # host[:port] every Slack post goes to instead (MAGTAPE_SLACK_WEBHOOK_URL_BASE,
    # a host or a URL; parsed here once), empty: each target's own host.
    url_base: str = ""
    allowed_hosts: tuple[str, ...] = ("hooks.slack.com",)
    allowed_ports: tuple[int, ...] = (443,)  # for tenants' URLs
    timeout_seconds: float = 5.0

    @property
    def allowed_host_set(self) -> frozenset[str]:
        """Hosts a tenant's Slack URL may point at (plus the base-override host)."""
        from urllib.parse import urlsplit

        hosts = {h.lower() for h in self.allowed_hosts}
        if self.url_base:
            host = urlsplit(f"//{self.url_base}").hostname
            if host:
                hosts.add(host.lower())
        return frozenset(hosts)

    @property
    def allowed_port_set(self) -> frozenset[int]:
        return frozenset(self.allowed_ports)


@dataclass(frozen=True)
class ClusterSettings:
    """The in-cluster runtime: policy discovery, replicated data, TLS and names."""

    policy_discovery: bool = False
    policy_namespace: str = ""  # empty: identity.namespace (Settings.policy_namespace)
    policy_selector: str = "openpolicyagent.org/policy=rego"
    replicate_kinds: tuple[KindRef, ...] = ()  # besides namespaces, e.g. v1/services
    tls_secret: str = "magtape-tls"
    tls_cert_file: str = ""  # serving cert read for the expiry metric
    service_name: str = "magtape-svc"
    webhook_name: str = "magtape-webhook"


@dataclass(frozen=True)
class ExceptionSettings:
    """Exceptions and enforcement overrides (docs/exceptions.md)."""

    max_days: float = 90.0
    reminder_hours: float = 72.0  # 0: no expiry reminders
    enforcement_configmap: str = "magtape-enforcement"
    # Derived objects follow their owner's verdict only when these identities
    # create them (docs/exceptions.md, "Rollouts and re-created Pods"); empty: never.
    controller_identities: tuple[str, ...] = DEFAULT_CONTROLLER_IDENTITIES
    # The owners they may inherit from (listed and watched; magtape.kube.owners).
    controller_owner_kinds: tuple[KindRef, ...] = DEFAULT_CONTROLLER_OWNER_KINDS


@dataclass(frozen=True)
class AuditSettings:
    """Background audit and PolicyReports (docs/audit.md)."""

    mode: AuditMode = AuditMode.OFF
    kinds: tuple[KindRef, ...] = ()  # empty: magtape.audit.kinds.DEFAULT_KINDS
    namespaces: AuditScope = AuditScope.OPTED_IN
    rate: float = 50.0  # objects evaluated per second, at most (docs/performance.md)
    workers: int = 1  # the audit's own engine worker processes
    interval_seconds: float = 3600.0  # full pass at least this often
    max_results: int = 500  # per PolicyReport
    max_report_bytes: int = 512 * 1024  # of results per PolicyReport
    lease_seconds: float = 15.0


@dataclass(frozen=True)
class PodSecuritySettings:
    """Pod Security Standards checks (docs/pod-security.md).

    ``level``/``version``: the cluster-wide default for namespaces without
    MagTape's pod-security labels (``data.magtape.pod_security.default``).
    ``override``: every object at this level, whatever its namespace says
    (``magtape check --pod-security``; never from the environment).
    """

    level: Level = Level.OFF
    version: str = LATEST
    override: PodSecurity | None = None

    @property
    def default(self) -> PodSecurity | None:
        return None if self.level is Level.OFF else PodSecurity(self.level, self.version)


# The groups, by their field name in Settings: with_overrides merges a mapping into these.
_GROUPS = ("engine", "identity", "http", "notify", "slack", "cluster", "exceptions", "audit",
           "pod_security")


@dataclass(frozen=True)
class Settings:
    """Every setting, grouped by concern (as kopf's ``OperatorSettings``).

    The three settings most commands read stay at the top; the rest live in
    one frozen group each, read as ``settings.engine.timeout_seconds``.
    """

    deny_level: DenyLevel = DenyLevel.LOW
    log_level: LogLevel = LogLevel.INFO
    # Where the policy READMEs are published: remediation links (docs/ci.md)
    docs_url: str = DEFAULT_DOCS_URL
    engine: EngineSettings = EngineSettings()
    identity: IdentitySettings = IdentitySettings()
    http: HttpSettings = HttpSettings()
    notify: NotifySettings = NotifySettings()
    slack: SlackSettings = SlackSettings()
    cluster: ClusterSettings = ClusterSettings()
    exceptions: ExceptionSettings = ExceptionSettings()
    audit: AuditSettings = AuditSettings()
    pod_security: PodSecuritySettings = PodSecuritySettings()
    # Where deny_level came from (a variable, a flag or "default"), and what
    # reading the configuration found worth a warning: logged once at start-up
    # (:meth:`summary`), because a deny level set by the wrong variable is the
    # first thing an operator gets wrong.
    # Not compared: two settings with the same values are equal whatever set them.
    deny_level_source: str = field(default="default", compare=False)
    config_warnings: tuple[str, ...] = field(default=(), compare=False)

    def summary(self) -> str:
        """The effective configuration in one line (no secrets), for the start-up log."""
        e, s = self.engine, self.slack
        engine = (f"embedded ({e.workers} workers, {e.timeout_seconds:g}s timeout, "
                  f"{e.memory_mb} MB each)" if e.kind is EngineKind.EMBEDDED
                  else f"opa at {e.opa_url}")
        slack = ("on" + (", passive" if s.passive else "") + (", default URL set"
                 if s.default_url else ", no default URL")) if s.enabled else "off"
        return (f"deny level {self.deny_level.value} (from {self.deny_level_source}); "
                f"engine {engine}, on engine failure {e.failure_policy.value}; "
                f"policy discovery {'on' if self.cluster.policy_discovery else 'off'}; "
                f"Events {'on' if self.notify.events_enabled else 'off'}; Slack {slack}; "
                f"audit {self.audit.mode.value}; log level {self.log_level.value}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``environ``; raise ConfigError on the first bad value."""
        e = _Env(environ)
        # MAGTAPE_DENY_VOLUME is the original's alias; MAGTAPE_DENY_LEVEL wins when both are set.
        deny_var = ("MAGTAPE_DENY_LEVEL" if "MAGTAPE_DENY_LEVEL" in environ
                    else "MAGTAPE_DENY_VOLUME")
        d = cls()
        de, dh, dn, ds, dc, dx, da = (d.engine, d.http, d.notify, d.slack, d.cluster,
                                      d.exceptions, d.audit)
        # Read in the order of the flat settings before the grouping, so the first bad
        # value reported is the same one.
        deny_level = e.enum(deny_var, DenyLevel, d.deny_level)
        engine = EngineSettings(
            kind=e.enum("MAGTAPE_POLICY_ENGINE", EngineKind, de.kind),
            failure_policy=e.enum("MAGTAPE_ENGINE_FAILURE_POLICY", FailurePolicy,
                                  de.failure_policy),
            # The API server waits for a webhook 30 s at most.
            timeout_seconds=e.number("MAGTAPE_ENGINE_TIMEOUT_SECONDS", de.timeout_seconds,
                                     minimum=0.01, maximum=30),
            workers=int(e.number("MAGTAPE_ENGINE_WORKERS", de.workers, minimum=1, maximum=64,
                                 integer=True)),
            memory_mb=int(e.number("MAGTAPE_ENGINE_MEMORY_MB", de.memory_mb, minimum=128,
                                   maximum=65536, integer=True)),
            compiled=e.boolean("MAGTAPE_ENGINE_COMPILED", de.compiled),
            opa_url=e.url("MAGTAPE_OPA_URL", de.opa_url),
            policy_dirs=e.list("MAGTAPE_POLICY_DIRS", de.policy_dirs),
            data_files=e.list("MAGTAPE_DATA_FILES", de.data_files),
        )
        log_level = e.enum("MAGTAPE_LOG_LEVEL", LogLevel, d.log_level)
        identity = IdentitySettings(
            cluster=e.text("MAGTAPE_CLUSTER_NAME", d.identity.cluster),
            pod=e.text("MAGTAPE_POD_NAME", d.identity.pod),
            namespace=e.text("MAGTAPE_NAMESPACE_NAME", d.identity.namespace),
        )
        http = HttpSettings(
            listen=e.address("MAGTAPE_LISTEN", dh.listen),
            metrics_listen=e.address("MAGTAPE_METRICS_LISTEN", dh.metrics_listen),
            threads=int(e.number("MAGTAPE_THREADS", dh.threads, minimum=1, maximum=MAX_THREADS,
                                 integer=True)),
            processes=int(e.number("MAGTAPE_PROCESSES", dh.processes, minimum=1, maximum=64,
                                   integer=True)),
            max_body_bytes=int(e.number("MAGTAPE_MAX_BODY_BYTES", dh.max_body_bytes,
                                        minimum=1024, maximum=64 * 1024 * 1024, integer=True)),
            keep_managed_fields=e.boolean("MAGTAPE_KEEP_MANAGED_FIELDS", dh.keep_managed_fields),
        )
        events_enabled = e.boolean("MAGTAPE_K8S_EVENTS_ENABLED", dn.events_enabled)
        slack = SlackSettings(
            enabled=e.boolean("MAGTAPE_SLACK_ENABLED", ds.enabled),
            passive=e.boolean("MAGTAPE_SLACK_PASSIVE", ds.passive),
            default_url=e.url("MAGTAPE_SLACK_WEBHOOK_URL_DEFAULT", ds.default_url, secret=True),
            user=e.text("MAGTAPE_SLACK_USER", ds.user),
            icon=e.text("MAGTAPE_SLACK_ICON", ds.icon),
            url_base=e.netloc("MAGTAPE_SLACK_WEBHOOK_URL_BASE", ds.url_base),
            allowed_hosts=e.hosts("MAGTAPE_SLACK_ALLOWED_HOSTS", ds.allowed_hosts),
            allowed_ports=e.ports("MAGTAPE_SLACK_ALLOWED_PORTS", ds.allowed_ports),
            timeout_seconds=e.number("MAGTAPE_SLACK_TIMEOUT_SECONDS", ds.timeout_seconds,
                                     minimum=0.1, maximum=60),
        )
        notify = NotifySettings(
            events_enabled=events_enabled,
            dedup_seconds=e.number("MAGTAPE_ALERT_DEDUP_SECONDS", dn.dedup_seconds, minimum=0,
                                   maximum=7 * 86400),
            queue_size=int(e.number("MAGTAPE_NOTIFY_QUEUE_SIZE", dn.queue_size, minimum=1,
                                    maximum=1_000_000, integer=True)),
        )
        cluster = ClusterSettings(
            policy_discovery=e.boolean("MAGTAPE_POLICY_DISCOVERY", dc.policy_discovery),
            policy_namespace=e.text("MAGTAPE_POLICY_NAMESPACE", dc.policy_namespace),
            policy_selector=e.text("MAGTAPE_POLICY_SELECTOR", dc.policy_selector),
            replicate_kinds=e.kinds("MAGTAPE_REPLICATE", dc.replicate_kinds),
            tls_secret=e.text("MAGTAPE_TLS_SECRET", dc.tls_secret),
            tls_cert_file=e.text("MAGTAPE_TLS_CERT_FILE", dc.tls_cert_file),
            service_name=e.text("MAGTAPE_SERVICE_NAME", dc.service_name),
            webhook_name=e.text("MAGTAPE_WEBHOOK_NAME", dc.webhook_name),
        )
        exceptions = ExceptionSettings(
            max_days=e.number("MAGTAPE_EXCEPTION_MAX_DAYS", dx.max_days, minimum=1, maximum=3650),
            reminder_hours=e.number("MAGTAPE_EXCEPTION_REMINDER_HOURS", dx.reminder_hours,
                                    minimum=0, maximum=8760),
            enforcement_configmap=e.text("MAGTAPE_ENFORCEMENT_CONFIGMAP",
                                         dx.enforcement_configmap),
            controller_identities=e.identities("MAGTAPE_CONTROLLER_IDENTITIES",
                                               dx.controller_identities),
            controller_owner_kinds=e.kinds("MAGTAPE_CONTROLLER_OWNER_KINDS",
                                           dx.controller_owner_kinds),
        )
        docs_url = e.url("MAGTAPE_DOCS_URL", d.docs_url)
        audit = AuditSettings(
            mode=e.enum("MAGTAPE_AUDIT", AuditMode, da.mode),
            kinds=e.kinds("MAGTAPE_AUDIT_KINDS", da.kinds),
            namespaces=e.enum("MAGTAPE_AUDIT_NAMESPACES", AuditScope, da.namespaces),
            rate=e.number("MAGTAPE_AUDIT_RATE", da.rate, minimum=0.1, maximum=10_000),
            workers=int(e.number("MAGTAPE_AUDIT_WORKERS", da.workers, minimum=1, maximum=64,
                                 integer=True)),
            interval_seconds=e.number("MAGTAPE_AUDIT_INTERVAL_SECONDS", da.interval_seconds,
                                      minimum=1, maximum=7 * 86400),
            max_results=int(e.number("MAGTAPE_AUDIT_MAX_RESULTS", da.max_results, minimum=1,
                                     maximum=1_000_000, integer=True)),
            max_report_bytes=int(e.number("MAGTAPE_AUDIT_MAX_REPORT_BYTES", da.max_report_bytes,
                                          minimum=4096, maximum=1024 * 1024, integer=True)),
            lease_seconds=e.number("MAGTAPE_AUDIT_LEASE_SECONDS", da.lease_seconds, minimum=2,
                                   maximum=3600),
        )
        pod_security = PodSecuritySettings(
            level=e.pss_level("MAGTAPE_POD_SECURITY", d.pod_security.level),
            version=e.pss_version("MAGTAPE_POD_SECURITY_VERSION", d.pod_security.version),
        )
        warnings = []
        if "MAGTAPE_DENY_LEVEL" in environ and "MAGTAPE_DENY_VOLUME" in environ:
            alias = e.enum("MAGTAPE_DENY_VOLUME", DenyLevel, d.deny_level)
            if alias is not deny_level:
                warnings.append(
                    f"MAGTAPE_DENY_LEVEL={deny_level.value} and MAGTAPE_DENY_VOLUME="
                    f"{alias.value} are both set and differ: MAGTAPE_DENY_LEVEL wins, so the "
                    f"deny level is {deny_level.value}; remove MAGTAPE_DENY_VOLUME (the "
                    "original's name) or set both alike")
        return cls(deny_level=deny_level, log_level=log_level, docs_url=docs_url,
                   engine=engine, identity=identity, http=http, notify=notify, slack=slack,
                   cluster=cluster, exceptions=exceptions, audit=audit,
                   pod_security=pod_security,
                   deny_level_source=deny_var if deny_var in environ else "default",
                   config_warnings=tuple(warnings))

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with command-line flags (or a test's changes) applied.

        A top-level setting takes its value (``deny_level=DenyLevel.HIGH``), a
        group a mapping of its own fields (``engine={"timeout_seconds": 3}``),
        merged into the group; ``None`` anywhere leaves the value as it is. An
        unknown name raises ``TypeError``, as the dataclass constructor would.
        """
        top: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None:
                continue
            if name in _GROUPS and isinstance(value, Mapping):
                value = replace(getattr(self, name),
                                **{k: v for k, v in value.items() if v is not None})
            top[name] = value
        return replace(self, **top)

    @property
    def policy_namespace(self) -> str:
        """Where policy ConfigMaps are discovered: ``cluster.policy_namespace`` or our own."""
        return self.cluster.policy_namespace or self.identity.namespace


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

    def number(self, name: str, default: float, minimum: float, maximum: float,
               integer: bool = False) -> float:
        """A finite number from ``minimum`` to ``maximum``: inf, NaN and absurd sizes
        stop start-up here rather than overflow later, far from the variable."""
        def parse(raw: str) -> float:
            value = float(int(raw)) if integer else float(raw)
            if not minimum <= value <= maximum:  # also rejects NaN and infinities
                raise ValueError(raw)
            return value

        kind = "a whole number" if integer else "a number"
        return self._parse(name, default, parse,
                           f"{kind} from {_plain(minimum)} to {_plain(maximum)}")

    def list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in raw.split(",") if p.strip())

        return self._parse(name, default, parse, "a comma-separated list")

    def hosts(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Host names, comma-separated: a URL or HOST:PORT here would never match."""
        def parse(raw: str) -> tuple[str, ...]:
            names = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
            if not all(_HOST_NAME.fullmatch(n) for n in names):
                raise ValueError(raw)
            return names

        return self._parse(name, default, parse,
                           "a comma-separated list of host names such as hooks.slack.com "
                           "(no scheme, port or path)")

    def identities(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Kubernetes user names (comma-separated); ``none`` for no identity at all."""
        def parse(raw: str) -> tuple[str, ...]:
            if raw.lower() == "none":
                return ()
            names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
            if not names or any(" " in n for n in names):
                raise ValueError(raw)
            return names

        return self._parse(name, default, parse,
                           "a comma-separated list of user names such as "
                           "system:serviceaccount:argo-rollouts:argo-rollouts, or none")

    def url(self, name: str, default: str, secret: bool = False) -> str:
        def parse(raw: str) -> str:
            from urllib.parse import urlsplit

            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a port that is not one
            if parts.scheme not in ("http", "https") or not parts.hostname or " " in raw:
                raise ValueError(raw)
            return raw

        return self._parse(name, default, parse, "an http:// or https:// URL", secret=secret)

    def kinds(self, name: str, default: tuple[KindRef, ...]) -> tuple[KindRef, ...]:
        def parse(raw: str) -> tuple[KindRef, ...]:
            kinds: list[KindRef] = []
            for part in raw.split(","):
                if part.strip() and (kind := KindRef.parse(part)) not in kinds:
                    kinds.append(kind)
            return tuple(kinds)

        return self._parse(name, default, parse,
                           "a comma-separated list of VERSION/PLURAL or GROUP/VERSION/PLURAL "
                           "such as v1/services,apps/v1/deployments; never v1/secrets (their "
                           "data would reach every policy)")

    def netloc(self, name: str, default: str) -> str:
        """``host[:port]`` from a host, ``host:port`` or a URL (whose path is ignored)."""
        def parse(raw: str) -> str:
            from urllib.parse import urlsplit

            parts = urlsplit(raw if "://" in raw else f"//{raw}")
            if (not parts.hostname or parts.username is not None or " " in raw
                    or ("://" in raw and parts.scheme != "https")):
                raise ValueError(raw)
            return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname

        return self._parse(name, default, parse,
                           "a host, HOST:PORT or an https:// URL (its host and port are used)")

    def ports(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        def parse(raw: str) -> tuple[int, ...]:
            ports = tuple(int(p) for p in raw.split(",") if p.strip())
            if not ports or not all(1 <= p <= 65535 for p in ports):
                raise ValueError(raw)
            return ports

        return self._parse(name, default, parse, "a comma-separated list of ports 1-65535")

    def pss_level(self, name: str, default: Level) -> Level:
        by_value = {lv.value: lv for lv in SETTING_LEVELS}
        return self._parse(name, default, lambda raw: by_value[raw.lower()],
                           ", ".join(by_value))

    def pss_version(self, name: str, default: str) -> str:
        return self._parse(name, default, parse_version, VERSION_ACCEPTED)

    def address(self, name: str, default: Address) -> Address:
        return self._parse(name, default, parse_address,
                           "HOST:PORT with PORT 0-65535 (a host name or address: no scheme, "
                           "path or spaces)")


def _plain(number: float) -> str:
    """``1000000`` as people write it: ``1,000,000`` (``:g`` would say ``1e+06``)."""
    return f"{int(number):,}" if number == int(number) else f"{number:g}"


_HOST_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_HOST = re.compile(r"[A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]")


def parse_address(raw: str) -> Address:
    """Parse ``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces): a host name
    or address, no scheme, path or spaces."""
    host, sep, port_text = raw.rpartition(":")
    if not sep or not _HOST.fullmatch(host):
        raise ValueError(raw)
    host = host.strip("[]") or "0.0.0.0"
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(raw)
    return Address(host, port)
