"""The Pod Security Standards checks (MT3001-MT3018) against the standard, level by level
and version by version, in both engines.

For baseline and restricted at every version from v1.0 to latest (and past it),
and privileged at the oldest and newest, each example pod below is judged, in a
namespace labelled with that level and version, as a Pod or as a Deployment's
template in turn (every example both ways, every version both kinds), by real
``opa run --server`` (the reference, through the OPA entrypoint) and by MagTape's
engine in both of its modes (regorus' compiled mode, which the built-in policies
take, on every case; its interpreter, their fallback, on every fifth). Written
from the standard's text and the reference implementation's per-version checks
(docs/pod-security.md):

- a ``pass`` example draws no MT30xx failure at any level or version;
- a ``fail`` example draws at least one MT30xx failure exactly where the standard
  forbids it (its ``fails`` says at which levels and versions), and none elsewhere;
- both engines give the same violations for every case.

Each example starts from a pod that satisfies restricted at every version (the
standard's "minimal valid pod") and changes one thing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from opasupport import OpaServer
from test_differential import (  # noqa: F401 (magtape_engines: the `magtape` fixture)
    Case,
    Magtape,
    assert_same,
    by_magtape,
    by_opa,
    magtape_engines,
    review_text,
    workload,
)

LEVEL_LABEL = "k8s.t-mobile.com/pod-security"
VERSION_LABEL = "k8s.t-mobile.com/pod-security-version"
NEWEST = 37  # the newest version whose rules differ (policies/lib/pod_security.rego)
LEVELS = ["privileged", "baseline", "restricted"]
VERSIONS = [f"v1.{n}" for n in range(NEWEST + 1)] + ["latest", "v1.40"]
NAMESPACE = "pss"


def minor(version: str) -> int:
    return NEWEST if version == "latest" else min(int(version.removeprefix("v1.")), NEWEST)


Fails = Callable[[str, int], bool]


def baseline(since: int = 0, until: int = 1000) -> Fails:
    """Forbidden by baseline (so by restricted too) in [since, until)."""
    return lambda level, v: level != "privileged" and since <= v < until


def restricted(since: int = 0, until: int = 1000) -> Fails:
    """Forbidden by restricted only, in [since, until)."""
    return lambda level, v: level == "restricted" and since <= v < until


def never(level: str, v: int) -> bool:
    return False


def minimal_pod() -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "app",
                "image": "registry.example.com/app:1.0",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ]
    }


@dataclass(frozen=True)
class Example:
    id: str
    change: Callable[[dict[str, Any]], None]
    fails: Fails = never
    annotations: dict[str, str] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        spec = minimal_pod()
        self.change(spec)
        return spec


def sc(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Set fields of the app container's security context."""

    def change(spec: dict[str, Any]) -> None:
        spec["containers"][0]["securityContext"].update(fields)

    return change


def unset(*names: str) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        for name in names:
            spec["containers"][0]["securityContext"].pop(name)

    return change


def pod(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Set pod-level fields (``securityContext`` merged into the pod's)."""

    def change(spec: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key == "securityContext":
                spec.setdefault("securityContext", {}).update(value)
            else:
                spec[key] = value

    return change


def both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        for c in changes:
            c(spec)

    return change


def container(name: str, list_name: str, **security: Any) -> Callable[[dict[str, Any]], None]:
    """Add a container (restricted-compliant unless ``security`` says otherwise)."""

    def change(spec: dict[str, Any]) -> None:
        c = copy.deepcopy(minimal_pod()["containers"][0])
        c["name"] = name
        c["securityContext"].update(security)
        spec.setdefault(list_name, []).append(c)

    return change


def probe(**probes: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["containers"][0].update(probes)

    return change


def windows(spec: dict[str, Any]) -> None:
    spec["os"] = {"name": "windows"}
    spec["containers"][0]["securityContext"] = {"runAsNonRoot": True}


def volume(**source: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec.setdefault("volumes", []).append({"name": "v", **source})

    return change


def nothing(spec: dict[str, Any]) -> None:
    pass


SYSCTL_SINCE = {
    "kernel.shm_rmid_forced": 0,
    "net.ipv4.ip_local_port_range": 0,
    "net.ipv4.tcp_syncookies": 0,
    "net.ipv4.ping_group_range": 0,
    "net.ipv4.ip_unprivileged_port_start": 0,
    "net.ipv4.ip_local_reserved_ports": 27,
    "net.ipv4.tcp_keepalive_time": 29,
    "net.ipv4.tcp_fin_timeout": 29,
    "net.ipv4.tcp_keepalive_intvl": 29,
    "net.ipv4.tcp_keepalive_probes": 29,
    "net.ipv4.tcp_rmem": 32,
    "net.ipv4.tcp_wmem": 32,
    "net.ipv4.tcp_slow_start_after_idle": 37,
    "net.ipv4.tcp_notsent_lowat": 37,
}
BASELINE_CAPS = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
]
APPARMOR = "container.apparmor.security.beta.kubernetes.io/app"
SECCOMP_POD = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_APP = "container.seccomp.security.alpha.kubernetes.io/app"
ALLOWED_VOLUMES: list[dict[str, Any]] = [
    {"configMap": {"name": "c"}},
    {"csi": {"driver": "d"}},
    {"downwardAPI": {}},
    {"emptyDir": {}},
    {"ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
    {"image": {"reference": "r"}},
    {"persistentVolumeClaim": {"claimName": "c"}},
    {"projected": {"sources": []}},
    {"secret": {"secretName": "s"}},
    {},  # no source: the API server defaults it to an emptyDir
]
RESTRICTED_VOLUMES: list[dict[str, Any]] = [
    {"gcePersistentDisk": {"pdName": "x"}},
    {"awsElasticBlockStore": {"volumeID": "x"}},
    {"gitRepo": {"repository": "x"}},
    {"nfs": {"server": "x", "path": "/"}},
    {"iscsi": {"targetPortal": "x", "iqn": "x", "lun": 0}},
    {"glusterfs": {"endpoints": "x", "path": "x"}},
    {"rbd": {"monitors": ["x"], "image": "x"}},
    {"flexVolume": {"driver": "x"}},
    {"cinder": {"volumeID": "x"}},
    {"cephfs": {"monitors": ["x"]}},
    {"flocker": {"datasetName": "x"}},
    {"fc": {"wwids": ["x"]}},
    {"azureFile": {"secretName": "x", "shareName": "x"}},
    {"vsphereVolume": {"volumePath": "x"}},
    {"quobyte": {"registry": "x", "volume": "x"}},
    {"azureDisk": {"diskName": "x", "diskURI": "x"}},
    {"portworxVolume": {"volumeID": "x"}},
    {"photonPersistentDisk": {"pdID": "x"}},
    {"scaleIO": {"gateway": "x", "system": "x", "secretRef": {}}},
    {"storageos": {"volumeName": "x"}},
]

EXAMPLES = [
    Example("minimal", nothing),
    # HostProcess (baseline, v1.0)
    Example(
        "host-process-false", both(pod(securityContext={"windowsOptions": {"hostProcess": False}}))
    ),
    Example(
        "host-process-pod",
        pod(securityContext={"windowsOptions": {"hostProcess": True}}),
        baseline(),
    ),
    Example("host-process-container", sc(windowsOptions={"hostProcess": True}), baseline()),
    # Host namespaces (baseline, v1.0)
    Example("host-namespaces-false", pod(hostNetwork=False, hostPID=False, hostIPC=False)),
    Example("host-network", pod(hostNetwork=True), baseline()),
    Example("host-pid", pod(hostPID=True), baseline()),
    Example("host-ipc", pod(hostIPC=True), baseline()),
    # Privileged (baseline, v1.0)
    Example("privileged-false", sc(privileged=False)),
    Example("privileged", sc(privileged=True), baseline()),
    Example("privileged-init", container("init", "initContainers", privileged=True), baseline()),
    Example(
        "privileged-ephemeral",
        container("debug", "ephemeralContainers", privileged=True),
        baseline(),
    ),
    # Capabilities (baseline v1.0; restricted v1.22, Windows exempt from v1.25)
    Example(
        "capabilities-net-bind-service",
        sc(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
    ),
    *[
        Example(
            f"capabilities-default-{cap}",
            sc(capabilities={"drop": ["ALL"], "add": [cap]}),
            restricted(22),
        )
        for cap in BASELINE_CAPS
        if cap != "NET_BIND_SERVICE"
    ],
    Example(
        "capabilities-sys-admin",
        sc(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        baseline(),
    ),
    Example(
        "capabilities-lower-case", sc(capabilities={"drop": ["ALL"], "add": ["chown"]}), baseline()
    ),
    Example("capabilities-no-drop", sc(capabilities={}), restricted(22)),
    Example("capabilities-unset", unset("capabilities"), restricted(22)),
    Example("capabilities-drop-some", sc(capabilities={"drop": ["NET_RAW"]}), restricted(22)),
    Example(
        "capabilities-windows-sys-admin",
        both(windows, sc(capabilities={"add": ["SYS_ADMIN"]})),
        lambda level, v: (level == "baseline") or (level == "restricted" and v < 25),
    ),
    # hostPath volumes (baseline v1.0) and volume types (restricted v1.0)
    *[Example(f"volume-{next(iter(src), 'no-source')}", volume(**src)) for src in ALLOWED_VOLUMES],
    Example("volume-host-path", volume(hostPath={"path": "/"}), baseline()),
    *[
        Example(f"volume-{next(iter(src))}", volume(**src), restricted())
        for src in RESTRICTED_VOLUMES
    ],
    # Host ports (baseline v1.0)
    Example("host-port-zero", probe(ports=[{"containerPort": 80, "hostPort": 0}])),
    Example("host-port", probe(ports=[{"containerPort": 80, "hostPort": 8080}]), baseline()),
    Example(
        "host-port-init",
        both(
            container("init", "initContainers"),
            lambda s: s["initContainers"][0].update(ports=[{"containerPort": 1, "hostPort": 1}]),
        ),
        baseline(),
    ),
    # AppArmor (baseline v1.0): fields and annotations
    Example("apparmor-runtime-default", sc(appArmorProfile={"type": "RuntimeDefault"})),
    Example(
        "apparmor-localhost",
        pod(securityContext={"appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}),
    ),
    Example("apparmor-unconfined", sc(appArmorProfile={"type": "Unconfined"}), baseline()),
    Example(
        "apparmor-pod-unconfined",
        pod(securityContext={"appArmorProfile": {"type": "Unconfined"}}),
        baseline(),
    ),
    Example(
        "apparmor-annotation-runtime-default", nothing, annotations={APPARMOR: "runtime/default"}
    ),
    Example("apparmor-annotation-localhost", nothing, annotations={APPARMOR: "localhost/p"}),
    Example("apparmor-annotation-empty", nothing, annotations={APPARMOR: ""}),
    Example(
        "apparmor-annotation-unconfined", nothing, baseline(), annotations={APPARMOR: "unconfined"}
    ),
    # SELinux (baseline v1.0; container_engine_t from v1.31)
    Example("selinux-container-t", sc(seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"})),
    Example(
        "selinux-init-kvm", pod(securityContext={"seLinuxOptions": {"type": "container_kvm_t"}})
    ),
    Example("selinux-engine-t", sc(seLinuxOptions={"type": "container_engine_t"}), baseline(0, 31)),
    Example("selinux-spc-t", sc(seLinuxOptions={"type": "spc_t"}), baseline()),
    Example(
        "selinux-user", pod(securityContext={"seLinuxOptions": {"user": "system_u"}}), baseline()
    ),
    Example("selinux-role", sc(seLinuxOptions={"role": "system_r"}), baseline()),
    # /proc mount (baseline v1.0; relaxed for user namespaces at baseline from v1.35)
    Example("proc-mount-default", sc(procMount="Default")),
    Example("proc-mount-unmasked", sc(procMount="Unmasked"), baseline()),
    Example(
        "proc-mount-unmasked-user-namespace",
        both(sc(procMount="Unmasked"), pod(hostUsers=False)),
        lambda level, v: level == "restricted" or (level == "baseline" and v < 35),
    ),
    # Seccomp (baseline: annotations before v1.19, fields from v1.19; restricted from v1.19,
    # Windows exempt from v1.25)
    Example(
        "seccomp-localhost", sc(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})
    ),
    Example(
        "seccomp-pod-level",
        both(
            unset("seccompProfile"),
            pod(securityContext={"seccompProfile": {"type": "RuntimeDefault"}}),
        ),
    ),
    Example("seccomp-unconfined", sc(seccompProfile={"type": "Unconfined"}), baseline(19)),
    Example(
        "seccomp-pod-unconfined",
        pod(securityContext={"seccompProfile": {"type": "Unconfined"}}),
        baseline(19),
    ),
    Example("seccomp-unset", unset("seccompProfile"), restricted(19)),
    Example(
        "seccomp-annotation-runtime-default",
        nothing,
        annotations={SECCOMP_POD: "runtime/default", SECCOMP_APP: "docker/default"},
    ),
    Example("seccomp-annotation-localhost", nothing, annotations={SECCOMP_APP: "localhost/p.json"}),
    Example(
        "seccomp-annotation-unconfined",
        nothing,
        baseline(0, 19),
        annotations={SECCOMP_POD: "unconfined"},
    ),
    Example(
        "seccomp-container-annotation-unconfined",
        nothing,
        baseline(0, 19),
        annotations={SECCOMP_APP: "unconfined"},
    ),
    Example(
        "seccomp-annotation-of-no-container",
        nothing,
        annotations={"container.seccomp.security.alpha.kubernetes.io/other": "unconfined"},
    ),
    # Sysctls (baseline; the safe set grows in v1.27, v1.29, v1.32, v1.37)
    *[
        Example(
            f"sysctl-{name}",
            pod(securityContext={"sysctls": [{"name": name, "value": "1"}]}),
            baseline(0, since),
        )
        for name, since in SYSCTL_SINCE.items()
    ],
    Example(
        "sysctl-unsafe",
        pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
        baseline(),
    ),
    # Host probes and lifecycle hooks (baseline v1.34)
    Example("probe-without-host", probe(livenessProbe={"httpGet": {"port": 80}})),
    Example("probe-empty-host", probe(readinessProbe={"tcpSocket": {"host": "", "port": 80}})),
    Example(
        "probe-http-host",
        probe(livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}),
        baseline(34),
    ),
    Example(
        "probe-tcp-host",
        probe(startupProbe={"tcpSocket": {"host": "node", "port": 80}}),
        baseline(34),
    ),
    Example(
        "lifecycle-host",
        probe(lifecycle={"preStop": {"httpGet": {"host": "h", "port": 80}}}),
        baseline(34),
    ),
    Example(
        "lifecycle-tcp-host",
        probe(lifecycle={"postStart": {"tcpSocket": {"host": "h", "port": 80}}}),
        baseline(34),
    ),
    # Privilege escalation (restricted v1.8; Windows exempt from v1.25)
    Example("privilege-escalation-unset", unset("allowPrivilegeEscalation"), restricted(8)),
    Example("privilege-escalation-true", sc(allowPrivilegeEscalation=True), restricted(8)),
    Example(
        "privilege-escalation-init",
        container("init", "initContainers", allowPrivilegeEscalation=True),
        restricted(8),
    ),
    Example("windows-minimal", windows, restricted(8, 25)),
    # Running as non-root (restricted v1.0; user namespaces exempt from v1.35)
    Example(
        "run-as-non-root-pod",
        both(unset("runAsNonRoot"), pod(securityContext={"runAsNonRoot": True})),
    ),
    Example("run-as-non-root-unset", unset("runAsNonRoot"), restricted()),
    Example("run-as-non-root-false", sc(runAsNonRoot=False), restricted()),
    Example(
        "run-as-non-root-pod-false", pod(securityContext={"runAsNonRoot": False}), restricted()
    ),
    Example(
        "run-as-non-root-user-namespace",
        both(unset("runAsNonRoot"), pod(hostUsers=False)),
        restricted(0, 35),
    ),
    Example(
        "run-as-non-root-host-users-true",
        both(unset("runAsNonRoot"), pod(hostUsers=True)),
        restricted(),
    ),
    # runAsUser (restricted v1.23; user namespaces exempt from v1.35)
    Example("run-as-user-1000", both(sc(runAsUser=1000), pod(securityContext={"runAsUser": 1000}))),
    Example("run-as-user-zero", sc(runAsUser=0), restricted(23)),
    Example("run-as-user-pod-zero", pod(securityContext={"runAsUser": 0}), restricted(23)),
    Example(
        "run-as-user-zero-user-namespace",
        both(sc(runAsUser=0), pod(hostUsers=False)),
        restricted(23, 35),
    ),
]


def object_for(kind: str, example: Example, spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {"app": "web"}}
    if example.annotations:
        meta["annotations"] = example.annotations
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": example.id, "namespace": NAMESPACE, **meta},
            "spec": spec,
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": example.id, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": meta, "spec": spec},
        },
    }


@dataclass(frozen=True)
class Expected:
    case: Case
    fails: bool


def cases() -> list[Expected]:
    """Every example at every (level, version), as a Pod or as a Deployment in turn
    (so each example is judged both ways at neighbouring versions, and each version
    judges both kinds). Privileged, which has no rules at any version, is asked at
    the oldest and the newest version."""
    out = []
    for level in LEVELS:
        versions = VERSIONS if level != "privileged" else [VERSIONS[0], "latest"]
        for v, version in enumerate(versions):
            namespaces = {
                NAMESPACE: {
                    "metadata": {
                        "name": NAMESPACE,
                        "labels": {LEVEL_LABEL: level, VERSION_LABEL: version},
                    }
                }
            }
            for e, example in enumerate(EXAMPLES):
                kind = ("Pod", "Deployment")[(v + e) % 2]
                obj = object_for(kind, example, example.spec())
                out.append(
                    Expected(
                        Case(
                            f"{example.id} as {kind} at {level}:{version}",
                            review_text(obj, NAMESPACE),
                            namespaces,
                        ),
                        example.fails(level, minor(version)),
                    )
                )
    return out


CASES = cases()


def pss_ids(found: frozenset[tuple[str, str, str]]) -> set[str]:
    return {errcode for _, errcode, _ in found if errcode.startswith("MT30")}


@pytest.fixture(scope="module")
def by_reference(opa_server: OpaServer) -> list[frozenset[tuple[str, str, str]]]:
    # Two batches at a time: OPA answers each on its own goroutine, so both cores work.
    with ThreadPoolExecutor(2) as pool:
        batches = pool.map(
            lambda start: by_opa(opa_server, [e.case for e in CASES[start : start + 500]]),
            range(0, len(CASES), 500),
        )
        return [found for batch in batches for found in batch]


def test_every_example_fails_exactly_where_the_standard_forbids_it(
    by_reference: list[frozenset[tuple[str, str, str]]],
) -> None:
    wrong = [
        (e.case.id, "should fail" if e.fails else "should pass", sorted(found))
        for e, found in zip(CASES, by_reference, strict=True)
        if bool(pss_ids(found)) is not e.fails
    ]
    assert not wrong, f"{len(wrong)} of {len(CASES)} wrong; first: {wrong[:5]}"
    # The table is not vacuous: every level and version has passes and failures
    # (privileged: passes only).
    assert sum(e.fails for e in CASES) > len(CASES) // 4


def test_magtape_agrees_with_opa_on_every_case(
    by_reference: list[frozenset[tuple[str, str, str]]], magtape: Magtape
) -> None:
    # The compiled mode (the webhook's) decides every case; the interpreter, its
    # fallback, every fifth (it is four times slower; still 2,000 cases).
    step = 1 if magtape.compiled else 5
    chosen = list(zip(CASES, by_reference, strict=True))[::step]
    got = by_magtape(magtape, [e.case for e, _ in chosen])
    differ = [
        (e.case.id, sorted(want ^ have))
        for (e, want), have in zip(chosen, got, strict=True)
        if want != have
    ]
    assert not differ, f"{len(differ)} of {len(CASES)} differ; first: {differ[:3]}"


def test_every_pss_check_is_exercised(by_reference: list[frozenset[tuple[str, str, str]]]) -> None:
    raised = set().union(*(pss_ids(found) for found in by_reference))
    assert raised == {f"MT30{n:02d}" for n in range(1, 19)}


def test_a_denial_names_the_control_container_field_and_allowed_values(
    by_reference: list[frozenset[tuple[str, str, str]]],
) -> None:
    messages = {
        msg for found in by_reference for msg, errcode, _ in found if errcode.startswith("MT30")
    }
    assert (
        '[FAIL] HIGH - container "app" sets securityContext.allowPrivilegeEscalation=true; '
        "restricted requires false (MT3014)"
    ) in messages
    for msg in messages:
        assert msg.startswith("[FAIL] HIGH - ") and " requires " in msg, msg
        assert "\n" not in msg and "\\" not in msg, msg


# Odd objects (the differential test's generator: names with quotes, backslashes,
# line separators and escapes, numbers such as 1e20 or 0.5, fields of the wrong
# type) in namespaces under a random level and version: both engines must agree on
# every PSS message too.
@st.composite
def labelled_workload(draw: st.DrawFn) -> Case:
    obj = draw(workload())
    labels = {LEVEL_LABEL: draw(st.sampled_from(["baseline", "restricted", "Restricted ", "x"])),
              VERSION_LABEL: draw(st.sampled_from(["v1.0", "v1.22", "v1.25", "latest", "v9"]))}
    namespaces = {NAMESPACE: {"metadata": {"name": NAMESPACE, "labels": labels}}}
    return Case(f"generated {obj['kind']} at {labels}", review_text(obj, NAMESPACE), namespaces)


def test_generated_objects_under_a_level(opa_server: OpaServer, magtape: Magtape) -> None:
    raised: set[str] = set()

    @settings(max_examples=4, derandomize=True, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=st.lists(labelled_workload(), min_size=40, max_size=40))
    def compare(batch: list[Case]) -> None:
        assert assert_same(opa_server, magtape, batch, raised) >= 3

    compare()
    assert {"MT3003", "MT3006"} <= raised  # privileged and hostPort fields are generated
