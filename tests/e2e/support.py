"""What the e2e tests share: MagTape installed from the rendered quickstart, run as processes.

Why it exists: the fixtures in conftest.py and the tests need the same
helpers (the MagTape processes and their probes, the Slack receiver,
``apply``); they live here rather than in conftest.py so that tests import
them by a name no other conftest.py shadows. What differs from a pod is
listed in podrun.py; the process-level settings changed are in
``local_settings``.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, service_account_token, tail, wait_for
from e2e.podrun import LocalPod, Manifests
from pki import make_tls_files

REPO = Path(__file__).resolve().parents[2]
MAGTAPE = str(Path(sys.executable).parent / "magtape")
OPT_IN = {"k8s.t-mobile.com/magtape": "enabled"}



def local_settings(slack_port: int) -> dict[str, str]:
    """The only settings changed from the rendered quickstart, for local reasons.

    Slack is on (quickstart keeps it off) so that a tenant's magtape-slack
    Secret can be followed to a receiver, which listens on 127.0.0.1 and a
    free port (not hooks.slack.com:443) with a test CA.
    """
    return {"MAGTAPE_SLACK_ENABLED": "TRUE", "MAGTAPE_SLACK_ALLOWED_HOSTS": "127.0.0.1",
            "MAGTAPE_SLACK_ALLOWED_PORTS": str(slack_port)}


# --------------------------------------------------------------------------- Slack


class SlackReceiver:
    """A Slack-compatible incoming-webhook endpoint over HTTPS on loopback."""

    def __init__(self, directory: Path) -> None:
        self.tls = make_tls_files(directory)
        self.posts: queue.Queue[tuple[str, Any]] = queue.Queue()
        received = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.put((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- MagTape


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{tail(self.log)}")
        return True

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class MagTape:
    """MagTape installed from the rendered quickstart, running as local processes."""

    cluster: Cluster
    manifests: Manifests
    pod: LocalPod
    init_pod: LocalPod
    init_container: dict[str, Any]
    serve_container: dict[str, Any]
    nginx_container: dict[str, Any]
    serve_kubeconfig: Path
    init_kubeconfig: Path
    slack: SlackReceiver
    procs: list[Proc] = field(default_factory=list)

    @property
    def webhook(self) -> dict[str, Any]:
        return self.manifests.of_kind("ValidatingWebhookConfiguration")[0]

    @property
    def namespace(self) -> str:
        return self.pod.namespace

    @property
    def logs(self) -> Path:
        return self.pod.root

    # -- processes
    def _base_env(self, kubeconfig: Path) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(HOME=str(self.pod.root), KUBECONFIG=str(kubeconfig),
                   PYTHONDONTWRITEBYTECODE="1")
        return env

    def run_init(self) -> subprocess.CompletedProcess[str]:
        """``magtape init`` as the init container runs it, with the init identity."""
        env = {**self._base_env(self.init_kubeconfig),
               **self.init_pod.environment(self.init_container)}
        args = [*self.init_container.get("args", [])]
        result = subprocess.run([MAGTAPE, *args], env=env, capture_output=True, text=True,
                                timeout=60, check=False, cwd=self.init_pod.root)
        with (self.init_pod.root / "init.log").open("a") as log:
            log.write(result.stderr)
        return result

    def serve_env(self) -> dict[str, str]:
        env = {**self._base_env(self.serve_kubeconfig),
               **self.pod.environment(self.serve_container),
               **local_settings(self.slack.port),
               "REQUESTS_CA_BUNDLE": str(self.slack.tls.ca)}
        for name in ("MAGTAPE_LISTEN", "MAGTAPE_METRICS_LISTEN"):
            env[name] = self.pod.network.address(env[name])
        return env

    @property
    def metrics_port(self) -> int:
        return int(self.serve_env()["MAGTAPE_METRICS_LISTEN"].rpartition(":")[2])

    @property
    def tls_port(self) -> int:
        return self.pod.network.local(self.nginx_container["ports"][0]["containerPort"])

    def start(self) -> None:
        self.pod.sync_secrets()
        serve = self._spawn("magtape-serve", [MAGTAPE, *self.serve_container.get("args", [])],
                            self.serve_env(), {})
        nginx = self._spawn("nginx", self._nginx_argv(), self._base_env(self.serve_kubeconfig),
                            self.pod.run_as(self.nginx_container))
        self.procs = [serve, nginx]
        wait_for(lambda: serve.alive() and self.http_get(self.metrics_port, "/readyz")[0] == 200,
                 60, "magtape serve /readyz")
        wait_for(lambda: nginx.alive() and self.nginx_ready(), 30, "nginx /nginx-ready")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []

    def _spawn(self, name: str, argv: list[str], env: dict[str, str],
               user: dict[str, Any]) -> Proc:
        log = self.pod.root / f"{name}.log"
        with log.open("ab") as sink:
            popen = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.pod.root, **user)
        return Proc(name, popen, log)

    def _nginx_argv(self) -> list[str]:
        """The container's nginx command, its config localized (paths, ports) only."""
        container = self.nginx_container
        argv = [*container.get("command", []), *container.get("args", [])]
        conf_path = argv[argv.index("-c") + 1]
        conf = Path(self.pod.localize(container, conf_path)).read_text()
        local = self.pod.localize(container, conf)
        for port in container.get("ports", []):
            pattern = rf"listen\s+{port['containerPort']}\b"
            assert re.search(pattern, local), f"nginx.conf does not listen on {port}"
            address = self.pod.network.address(str(port["containerPort"]))
            local = re.sub(pattern, f"listen {address}", local)
        upstream = self.pod.environment(self.serve_container)["MAGTAPE_LISTEN"]
        assert upstream in local, f"nginx.conf does not proxy to MAGTAPE_LISTEN={upstream}"
        local = local.replace(upstream, self.pod.network.address(upstream))
        target = self.pod.root / "nginx.conf"
        target.write_text(local)
        target.chmod(0o644)
        argv[argv.index("-c") + 1] = str(target)
        argv[0] = shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}"
        return argv

    # -- probes
    def http_get(self, port: int, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def ca_bundle(self) -> bytes:
        config = self.cluster.get_json("validatingwebhookconfiguration",
                                       self.webhook["metadata"]["name"])
        return base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])

    def server_name(self) -> str:
        service = self.webhook["webhooks"][0]["clientConfig"]["service"]
        return f"{service['name']}.{service['namespace']}.svc"

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_bundle().decode())

    def nginx_ready(self) -> bool:
        ctx = self.tls_context()
        ctx.check_hostname = False  # the name is checked in served_certificate()
        conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, timeout=5, context=ctx)
        try:
            conn.request("GET", "/nginx-ready")
            return conn.getresponse().status == 204
        except OSError:
            return False
        finally:
            conn.close()

    def served_certificate(self) -> bytes:
        """The DER certificate nginx serves, verified as the API server verifies it."""
        ctx = self.tls_context()
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=self.server_name()) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        status, text = self.http_get(self.metrics_port, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            sample, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total

    def route_service(self) -> None:
        """kube-proxy's part: the webhook Service's port reaches nginx's container port."""
        service_ref = self.webhook["webhooks"][0]["clientConfig"]["service"]
        service = self.manifests.get("Service", service_ref["name"], service_ref["namespace"])
        port = next(p for p in service["spec"]["ports"]
                    if p["port"] == service_ref.get("port", 443))
        target = port.get("targetPort", port["port"])
        selector = service["spec"]["selector"]
        labels = self.pod.template["metadata"].get("labels") or {}
        assert selector.items() <= labels.items(), (
            f"Service {service_ref['name']} selects {selector}, the pod has {labels}")
        container_port = next(
            p["containerPort"] for c in self.pod.template["spec"]["containers"]
            for p in c.get("ports", []) if target in (p.get("name"), p["containerPort"]))
        self.cluster.route(service_ref["namespace"], service_ref["name"], port["port"],
                           self.pod.network.local(container_port))


def wait_enforcing(cluster: Cluster) -> None:
    """Until the API server sends reviews to MagTape and gets its answers (the new
    caBundle and route reach it a moment after they are written)."""
    apply(cluster, [{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "e2e-ready", "labels": OPT_IN}}])
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "probe", "namespace": "e2e-ready"},
           "spec": {"containers": [{"name": "probe", "image": "busybox:1.36",
                                    "securityContext": {"privileged": True}}]}}

    def denied() -> bool:
        result = apply(cluster, [pod], "--dry-run=server", check=False)
        return result.returncode != 0 and "(MT2001)" in result.stderr

    wait_for(denied, 60, "the API server to get MagTape's denial of a privileged Pod",
             interval=0.3)


def kubeconfig_for(cluster: Cluster, pod: LocalPod, container: dict[str, Any]) -> Path:
    """A kubeconfig with the token of the ServiceAccount the container's manifest gives it."""
    account = pod.service_account(container)
    assert account is not None, f"container {container['name']} gets no API credentials"
    token = service_account_token(cluster, pod.namespace, account)
    return cluster.write_kubeconfig(pod.root / f"{container['name']}.kubeconfig", token,
                                    f"system:serviceaccount:{pod.namespace}:{account}")


def apply(cluster: Cluster, objects: list[dict[str, Any]], *args: str,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", *args, "-f", "-", input=yaml.safe_dump_all(objects),
                           check=check)


def container(name: str, privileged: bool = False) -> dict[str, Any]:
    """A container that passes every built-in check unless ``privileged``."""
    c: dict[str, Any] = {
        "name": name, "image": "nginx:1.27",
        "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"cpu": "10m", "memory": "16Mi"}}}
    if privileged:
        c["securityContext"] = {"privileged": True}
    return c
