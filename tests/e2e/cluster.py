"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Why it exists: MagTape's contract with Kubernetes (the ValidatingWebhookConfiguration,
the RBAC it ships, Events, ServiceAccount tokens, dry runs, Pods that a
controller creates) can only be proven against a real API server. This module
starts one for the end-to-end suite (tests/e2e/) and for a person checking the
docs by hand (``python tests/e2e/cluster.py up``), and tears it down again.

What runs, all on 127.0.0.1 with free ports, all state in one work directory:

- etcd (Debian's etcd-server, ``/usr/bin/etcd``);
- kube-apiserver with RBAC on, a static-token admin identity (group
  ``system:masters``), a ServiceAccount token signer, and an egress selector
  whose "cluster" traffic goes through :class:`ServiceProxy`;
- kube-controller-manager, so Deployments make ReplicaSets and Pods with real
  ownerReferences, and ServiceAccount token Secrets get their tokens. It runs
  as kubeadm runs it: as user ``system:kube-controller-manager`` with
  ``--use-service-account-credentials``, so each controller sends its requests
  as its own ServiceAccount (``system:serviceaccount:kube-system:
  replicaset-controller``, ...) under the API server's bootstrap RBAC, and a
  webhook sees the identities it sees in a real cluster.

There is no kubelet and no kube-proxy. The API server calls a webhook Service
the way it always does (it resolves the Service's ClusterIP and verifies the
certificate against ``<service>.<namespace>.svc``); :class:`ServiceProxy` is
the one stand-in, for kube-proxy: an HTTP CONNECT proxy on a Unix socket
(the API server's real egress path, the one konnectivity uses) that forwards a
ClusterIP:port to a loopback port chosen by the test (:meth:`Cluster.route`).

Binaries: kube-apiserver and kube-controller-manager from ``.tools/bin``
(hack/tools.sh installs them: local cache, then ../shared/tools, then the
official download); etcd from PATH. Readiness is polled (etcd ``/health``,
the API server's ``/readyz``, a token minted by the controller manager),
never slept on; a process that exits while it is awaited fails the start with
its log.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
SERVICE_CIDR = "10.96.0.0/16"
START_TIMEOUT = 90.0


class ClusterError(RuntimeError):
    """The control plane could not be started; the message says what to do."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now, for a process a test is about to start.

    Taken below the kernel's ephemeral range (net.ipv4.ip_local_port_range),
    from which connect() picks source ports: a port bind(0) returns is in that
    range, and any outgoing connection could take it before the process binds
    it (an audit replica once failed to start on "Address already in use").
    Never the same port twice in one test process.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    for _ in range(1000):
        port = 10000 + secrets.randbelow(max(1, ephemeral_low - 10000))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise ClusterError(f"no free loopback port between 10000 and {ephemeral_low}")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; raise ClusterError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:g}s waiting for {what}")
        pause.wait(interval)


def binary(name: str) -> str:
    """A control-plane binary: .tools/bin (hack/tools.sh), else PATH."""
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    hint = ("apt-get install etcd-server (hack/setup.sh does)" if name == "etcd"
            else f"hack/tools.sh {name}")
    raise ClusterError(f"{name} is not installed: run {hint}")


# --------------------------------------------------------------------------- PKI


def _key_pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pki(root: Path) -> None:
    """CA, the API server's serving pair (127.0.0.1/localhost), the SA signing key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "magtape-e2e-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    serving = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                           "kube-apiserver")]))
               .issuer_name(ca_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.SubjectAlternativeName([
                   x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "ca.crt").write_bytes(_cert_pem(ca))
    (root / "apiserver.crt").write_bytes(_cert_pem(serving))
    (root / "apiserver.key").write_bytes(_key_pem(key))
    (root / "sa.key").write_bytes(_key_pem(sa_key))
    for private in ("apiserver.key", "sa.key"):
        (root / private).chmod(0o600)
    (root / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


# --------------------------------------------------------------------------- kube-proxy stand-in


class ServiceProxy:
    """HTTP CONNECT on a Unix socket: the API server's "cluster" egress, routed like kube-proxy.

    Only targets added with :meth:`route` are forwarded; anything else gets
    503, as a Service without ready endpoints would fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.routes: dict[str, int] = {}
        self._tunnels: dict[str, set[socket.socket]] = {}
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, name="service-proxy", daemon=True)
        self._thread.start()

    def route(self, target: str, port: int | None) -> None:
        """Forward ``target`` (``ip:port``) to 127.0.0.1:``port``; None removes the route.

        Removing a route also closes its open tunnels, as endpoints going away
        do: the API server keeps webhook connections alive.
        """
        with self._lock:
            if port is None:
                self.routes.pop(target, None)
                for sock in self._tunnels.pop(target, set()):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            else:
                self.routes[target] = port

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            target = request_line[1] if len(request_line) >= 2 else ""
            with self._lock:
                port = self.routes.get(target)
            if request_line[:1] != ["CONNECT"] or port is None:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                upstream.settimeout(None)
                with self._lock:
                    self._tunnels.setdefault(target, set()).add(upstream)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(conn, upstream)
                with self._lock:
                    self._tunnels.get(target, set()).discard(upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    def copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join(timeout=30)


# --------------------------------------------------------------------------- the cluster


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ClusterError(f"{self.name} exited with {self.proc.returncode}:\n"
                               f"{tail(self.log)}")

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Cluster:
    """A running control plane; build it with :func:`start`, end it with :meth:`stop`."""

    workdir: Path
    server: str
    token: str
    ca_file: Path
    kubeconfig: Path
    proxy: ServiceProxy
    processes: list[Process] = field(default_factory=list)
    # (stopped, authorizing again) of each deliberate kube-apiserver restart, in
    # time.time() seconds: clients' failures inside them are the test's doing.
    outages: list[tuple[float, float]] = field(default_factory=list)

    # -- clients
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None, timeout: float = 60,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless ``kubeconfig``)."""
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
            cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def request(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """A GET against the API server (admin token unless ``token``)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(self.server + path,
                                     headers={"Authorization": f"Bearer {token or self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        """A kubeconfig for ``token`` (e.g. a ServiceAccount's), as kubectl and MagTape read it."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "e2e", "user": user}}],
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def route(self, namespace: str, service: str, port: int, local_port: int | None) -> str:
        """Make ``service``'s ClusterIP:``port`` reach 127.0.0.1:``local_port`` (None: cut it)."""
        ip = self.get_json("service", "-n", namespace, service)["spec"]["clusterIP"]
        target = f"{ip}:{port}"
        self.proxy.route(target, local_port)
        return target

    # -- lifecycle
    @contextlib.contextmanager
    def apiserver_stopped(self) -> Iterator[None]:
        """kube-apiserver stopped (etcd keeps the state) for the ``with`` body, then
        started again with the same flags and port; returns once it is ready."""
        at = next(i for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        argv = [str(a) for a in self.processes[at].proc.args]  # type: ignore[union-attr]
        stopped = time.time()
        self.processes[at].stop()
        try:
            yield
        finally:
            restarted = _spawn(self.workdir, f"kube-apiserver-{time.time_ns()}", argv)
            self.processes[at] = Process("kube-apiserver", restarted.proc, restarted.log)
            wait_for(lambda: _api_ready(self), START_TIMEOUT,
                     "kube-apiserver /readyz after its restart")
            # /readyz can pass before the RBAC authorizer has its roles again: until
            # then every ServiceAccount's request is refused (403). Ready means that too.
            wait_for(lambda: _rbac_authorizes(self), START_TIMEOUT,
                     "RBAC to authorize again after the restart")
            self.outages.append((stopped, time.time()))

    def check_alive(self) -> None:
        for p in self.processes:
            p.check_alive()

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()
        self.proxy.close()


def _spawn(workdir: Path, name: str, argv: list[str]) -> Process:
    log = workdir / f"{name}.log"
    with log.open("wb") as sink:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=workdir,
                                start_new_session=True)
    return Process(name, proc, log)


def start(workdir: Path | None = None) -> Cluster:
    """Start etcd, kube-apiserver and kube-controller-manager; return once they serve."""
    root = workdir or Path(tempfile.mkdtemp(prefix="magtape-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)  # pods' non-root users traverse it to their own directories
    etcd, apiserver, controller_manager = (binary("etcd"), binary("kube-apiserver"),
                                           binary("kube-controller-manager"))
    _write_pki(root)
    token, kcm_token = secrets.token_hex(24), secrets.token_hex(24)
    (root / "tokens.csv").write_text(
        f"{token},admin,admin-uid,system:masters\n"
        f"{kcm_token},system:kube-controller-manager,kcm-uid\n")
    (root / "tokens.csv").chmod(0o600)
    proxy = ServiceProxy(root / "egress.sock")
    (root / "egress.yaml").write_text(json.dumps({
        "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {
            "proxyProtocol": "HTTPConnect",
            "transport": {"uds": {"udsName": str(proxy.path)}}}}]}))
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    cluster = Cluster(root, server, token, root / "ca.crt", root / "admin.kubeconfig", proxy)
    cluster.write_kubeconfig(cluster.kubeconfig, token, "admin")
    kcm_kubeconfig = cluster.write_kubeconfig(root / "controller-manager.kubeconfig", kcm_token,
                                              "system:kube-controller-manager")
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        cluster.processes.append(_spawn(root, "etcd", [
            etcd, "--name", "e2e", "--data-dir", str(root / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{etcd_peer}",
            "--log-level", "warn", "--logger", "zap"]))
        wait_for(lambda: _etcd_healthy(cluster, etcd_url), START_TIMEOUT, "etcd /health")
        cluster.processes.append(_spawn(root, "kube-apiserver", [
            apiserver, f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={root / 'apiserver.crt'}",
            f"--tls-private-key-file={root / 'apiserver.key'}",
            f"--client-ca-file={root / 'ca.crt'}",
            f"--token-auth-file={root / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={root / 'sa.pub'}",
            f"--service-account-signing-key-file={root / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=none",
            f"--egress-selector-config-file={root / 'egress.yaml'}",
            # No kubelet and no nodes: nothing needs the admission plugins that
            # assume them (e.g. ServiceAccount token automounting stays on).
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount",
            "--disable-admission-plugins=StorageObjectInUseProtection,"
            "PersistentVolumeClaimResize,DefaultStorageClass,DefaultTolerationSeconds",
            "--allow-privileged=true",  # privileged Pods are what MT2001 is about
            "--profiling=false", "-v=1"]))
        wait_for(lambda: _api_ready(cluster), START_TIMEOUT, "kube-apiserver /readyz")
        cluster.processes.append(_spawn(root, "kube-controller-manager", [
            controller_manager, f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--use-service-account-credentials=true",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--port=0",
            "--leader-elect=false",
            f"--service-account-private-key-file={root / 'sa.key'}",
            f"--root-ca-file={root / 'ca.crt'}",
            "--controllers=*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder,"
            "-ttl,-bootstrapsigner,-tokencleaner",
            "-v=1"]))
        _wait_controller_manager(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _etcd_healthy(cluster: Cluster, url: str) -> bool:
    cluster.check_alive()
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def _api_ready(cluster: Cluster) -> bool:
    cluster.check_alive()
    try:
        return cluster.request("/readyz")[0] == 200
    except OSError:
        return False


def _rbac_authorizes(cluster: Cluster) -> bool:
    """A request only an RBAC binding allows (discovery, for any authenticated user) is
    allowed: the authorizer has its roles."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "e2e-rbac-probe", "groups": ["system:authenticated"],
                       "nonResourceAttributes": {"path": "/api", "verb": "get"}}}
    done = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review),
                           check=False)
    return done.returncode == 0 and bool(json.loads(done.stdout)["status"].get("allowed"))


def _wait_controller_manager(cluster: Cluster) -> None:
    """Ready when its token controller has filled the default ServiceAccount's token."""

    def minted() -> bool:
        cluster.check_alive()
        try:  # a busy machine can time a request out: poll again, as _api_ready does
            status, body = cluster.request("/api/v1/namespaces/default/secrets")
        except OSError:
            return False
        if status != 200:
            return False
        return any(s.get("type") == "kubernetes.io/service-account-token"
                   and (s.get("data") or {}).get("token")
                   for s in json.loads(body).get("items", []))

    wait_for(minted, START_TIMEOUT, "kube-controller-manager to mint a ServiceAccount token")


def service_account_token(cluster: Cluster, namespace: str, name: str,
                          timeout: float = 30) -> str:
    """A token for ServiceAccount ``namespace/name`` from a token Secret (Kubernetes 1.20).

    Creates a Secret of type service-account-token for it (the way 1.20
    clusters issue long-lived tokens) and waits for the controller manager to
    fill it in.
    """
    secret = f"{name}-e2e-token"
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": secret, "namespace": namespace,
                     "annotations": {"kubernetes.io/service-account.name": name}}}))
    found: list[str] = []

    def filled() -> bool:
        data = cluster.get_json("secret", "-n", namespace, secret).get("data") or {}
        if data.get("token"):
            found.append(base64.b64decode(data["token"]).decode())
        return bool(found)

    wait_for(filled, timeout, f"a token for ServiceAccount {namespace}/{name}", interval=0.2)
    return found[0]


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[Cluster]:
    cluster = start(workdir)
    try:
        yield cluster
    finally:
        cluster.stop()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the cluster exactly as Ctrl-C does


def main(argv: list[str]) -> int:
    """``python tests/e2e/cluster.py up [DIR]``: run a cluster until interrupted.

    Ctrl-C or SIGTERM stops etcd, kube-apiserver and the controller manager;
    a directory this command made is removed then, and also when the start
    fails (a given DIR is kept, with the logs).
    """
    if not argv or argv[0] != "up":
        print("usage: python tests/e2e/cluster.py up [WORKDIR]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    given = Path(argv[1]).resolve() if len(argv) > 1 else None
    workdir = given or Path(tempfile.mkdtemp(prefix="magtape-e2e-"))
    try:
        with running(workdir) as cluster:
            print(f"cluster up: export KUBECONFIG={cluster.kubeconfig}", flush=True)
            print(f"(Ctrl-C stops it; logs in {cluster.workdir}"
                  f"{'' if given else ', removed on exit'})", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during the start
        return 130
    finally:
        if given is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
