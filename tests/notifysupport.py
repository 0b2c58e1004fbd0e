"""Real parts shared by the notification and metrics tests.

- :class:`SlackReceiver`: a Slack-compatible incoming-webhook endpoint on
  loopback (plain HTTP, or HTTPS with a throw-away CA) that records posts and
  can answer 200, answer 500, rate-limit with Retry-After, or hang.
- :func:`label_policies`: two small policies whose failures a test switches on
  with object labels, so these tests do not depend on the built-in catalogue.
- :func:`outcome`: an Outcome as AdmissionService builds it, for dispatcher tests.
- :func:`serve`: a Flask app served by real waitress on 127.0.0.1.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from flask import Flask
from waitress.server import create_server

from magtape.admission import Outcome
from magtape.decision import decide
from magtape.policy import (
    DenyLevel,
    Evaluation,
    PolicyModule,
    PolicyResult,
    Severity,
    Violation,
)
from magtape.review import make_review, review_from_document
from magtape.server import stop_waitress
from pki import TlsFiles

SECRET_PATH = "/services/T0SECRET/B0SECRET/XXXXWEBHOOKTOKENXXXX"

_POLICY = """package kubernetes.admission.{pkg}
import rego.v1

policy_metadata := {{"name": "{name}", "severity": "{sev}", "errcode": "{code}",
                     "targets": {{"Pod", "Deployment"}}}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains info if {{
  matches
  input.request.object.metadata.labels["{label}"]
  info := {{"name": policy_metadata.name, "severity": "{sev}", "errcode": "{code}",
           "msg": sprintf("[FAIL] {sev} - {text} for container \\"%v\\" ({code})",
                          [object.get(input.request.object.metadata, "name",
                                      object.get(input.request.object.metadata,
                                                 "generateName", "unnamed"))])}}
}}
"""


def label_policy(pkg: str, name: str, sev: str, code: str, label: str,
                 text: str) -> PolicyModule:
    """A policy that fails Pods and Deployments carrying ``label``, with message
    ``[FAIL] <sev> - <text> for container "<object name>" (<code>)``."""
    return PolicyModule(f"test/{pkg}", f"test/{pkg}.rego",
                        _POLICY.format(pkg=pkg, name=name, sev=sev, code=code, label=label,
                                       text=text))


def label_policies() -> list[PolicyModule]:
    """``liveness-probe`` (LOW, label ``fail-low``) and ``privileged-pod`` (HIGH, ``fail-high``)."""
    return [label_policy("liveness_probe", "liveness-probe", "LOW", "MT1001", "fail-low",
                         "Liveness Probe missing"),
            label_policy("privileged_pod", "privileged-pod", "HIGH", "MT2001", "fail-high",
                         "Found privileged Security Context")]


def deployment(name: str, *labels: str, namespace: str = "test1") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {label: "true" for label in labels}},
            "spec": {"template": {"spec": {"containers": [{"name": name, "image": "nginx"}]}}}}


CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
DENY = "[FAIL] HIGH - hostPort is configured for container \"web\" (MT1008)"
WARN = "[FAIL] LOW - Liveness Probe missing for container \"web\" (MT1001)"


def outcome(name: str = "web", *, kind: str = "Deployment", namespace: str = "test1",
            messages: tuple[str, ...] = (DENY,), owned: bool = False,
            dry_run: bool = False, operation: str = "CREATE", username: str = "",
            sub_resource: str = "") -> Outcome:
    """An Outcome as AdmissionService builds it, for a workload failing ``messages``;
    ``owned``: a ReplicaSet's, created by the ReplicaSet controller unless ``username``."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "name": "web-5d4f", "uid": "1", "controller": True}]
    api_version = "v1" if kind == "Pod" else "apps/v1"
    username = username or (CONTROLLER if owned else "jane")
    review = make_review({"apiVersion": api_version, "kind": kind, "metadata": meta}, namespace,
                         operation=operation, username=username)
    if dry_run or sub_resource:
        review = review_from_document({"apiVersion": review.api_version, "request": {
            **review.request, "dryRun": dry_run,
            **({"subResource": sub_resource} if sub_resource else {})}})
    violations = tuple(
        Violation(m, "host-port" if "HIGH" in m else "liveness-probe",
                  Severity.HIGH if "HIGH" in m else Severity.LOW, m[-7:-1])
        for m in messages)
    evaluation = Evaluation((PolicyResult("checks", violations),))
    return Outcome(review, decide(evaluation, DenyLevel.LOW), DenyLevel.LOW, evaluation)


# -- Slack receiver ------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    path: str
    body: dict[str, Any]
    at: float


class SlackReceiver:
    """An incoming-webhook receiver; ``mode`` is ok, error (500), ratelimit (429 once), hang."""

    def __init__(self, mode: str = "ok", tls: TlsFiles | None = None,
                 retry_after: str = "1") -> None:
        self.mode = mode
        self.retry_after = retry_after
        self.posts: list[Post] = []
        self.release = threading.Event()  # ends hangs
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._cond:
                    receiver.posts.append(Post(self.path, body, time.monotonic()))
                    attempt = len(receiver.posts)
                    receiver._cond.notify_all()
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                if receiver.mode == "error":
                    self._answer(500, b"internal_error")
                elif receiver.mode == "ratelimit" and attempt == 1:
                    self._answer(429, b"rate_limited", {"Retry-After": receiver.retry_after})
                else:
                    self._answer(200, b"ok")

            def _answer(self, code: int, text: bytes, headers: dict[str, str] | None = None
                        ) -> None:
                try:
                    self.send_response(code)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is the point of "hang"

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="slack-receiver")
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = SECRET_PATH, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Post]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.posts) >= count, timeout), \
                f"{len(self.posts)} of {count} Slack posts arrived within {timeout:g}s"
            return list(self.posts)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiver(mode: str = "ok", tls: TlsFiles | None = None, **kw: Any) -> Iterator[SlackReceiver]:
    r = SlackReceiver(mode, tls, **kw)
    try:
        yield r
    finally:
        r.close()


# -- waitress ------------------------------------------------------------------


@contextmanager
def serve(app: Flask, threads: int = 4) -> Iterator[str]:
    """Serve ``app`` with real waitress on 127.0.0.1; yields its base URL."""
    server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="test")
    thread = threading.Thread(target=server.run, daemon=True, name="waitress-test")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop_waitress(server, thread, 5)
        assert not thread.is_alive(), "waitress did not stop"
