"""HTTP layer: Flask apps for the admission listener and the metrics listener.

Only translation happens here: bytes in, JSON out, status codes counted. The
admission listener (behind the nginx TLS sidecar in a cluster) serves
``POST /``, ``/healthz`` and ``/readyz``; the metrics listener (plain HTTP for
the kubelet and Prometheus) serves ``/metrics``, ``/healthz`` and ``/readyz``.
No request, however malformed, gets a stack trace back. ``POST /`` is answered
by one plain WSGI function in front of Flask (:func:`_admission_endpoint`):
Flask's request machinery cost as much as MagTape's own work per admission
(docs/performance.md), so the admission path never enters it; every other
route is Flask's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from magtape.admission import AdmissionService
from magtape.engine import REQUEST_DEADLINE
from magtape.metrics import Metrics
from magtape.settings import Settings

log = logging.getLogger(__name__)

# The WSGI environ key holding when the server had read the request
# (time.monotonic()): magtape.listeners' task sets it.
RECEIVED_KEY = "magtape.received"

ReadyCheck = Callable[[], bool]
# Why not ready, one sentence each, for /readyz's "reasons" (the operator's
# first question when a pod stays out of the Service).
NotReadyReasons = Callable[[], list[str]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def create_app(service: AdmissionService, ready: ReadyCheck, settings: Settings,
               metrics: Metrics, process: int = 0,
               reasons: NotReadyReasons | None = None) -> Flask:
    """The admission app around ``service``. The factory only wires: the caller
    (``server.start``, or a test) builds the service and says what "ready" means."""
    app = Flask("magtape.admission")
    app.config["MAX_CONTENT_LENGTH"] = settings.http.max_body_bytes

    _add_health(app, settings, ready, process, reasons)
    _add_error_handlers(app)

    @app.after_request
    def count(response: Response) -> Response:
        metrics.count(metrics.http_responses, str(response.status_code))
        return response

    app.wsgi_app = _admission_endpoint(app.wsgi_app, service, metrics,  # type: ignore[method-assign,assignment]
                                       settings.http.max_body_bytes,
                                       settings.engine.timeout_seconds)
    return app


def _admission_endpoint(flask_app: WSGIApp, service: AdmissionService, metrics: Metrics,
                        max_body_bytes: int, engine_timeout: float) -> WSGIApp:
    """``/``: the admission endpoint, the only path; every other path goes to Flask.

    The body is read by its Content-Length (waitress sets one for chunked
    requests too, once it has them whole) or, from a server that marks its
    input terminated instead, up to the limit; over the limit is 413. With
    neither, the body is empty (RFC 9112, 6.3), which is a malformed review.
    A defect is a JSON 500, as Flask's handler of last resort answers.
    Every answer is counted in ``magtape_http_responses_total``.
    """
    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/":
            return flask_app(environ, start_response)
        extra: list[tuple[str, str]] = []
        if environ.get("REQUEST_METHOD") != "POST":
            status, doc = 405, {"error": "method not allowed"}
            extra = [("Allow", "POST")]
        else:
            # The engine's deadline counts from when the request was read
            # (magtape.listeners stamps it), not from when a thread took it.
            received = environ.get(RECEIVED_KEY) or time.monotonic()
            token = REQUEST_DEADLINE.set(received + engine_timeout)
            try:
                status, doc = _admit(environ, service, max_body_bytes)
            finally:
                REQUEST_DEADLINE.reset(token)
        body = json.dumps(doc, separators=(",", ":")).encode()
        metrics.count(metrics.http_responses, str(status))
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))), *extra])
        return [body]

    return wsgi


def _admit(environ: dict[str, Any], service: AdmissionService,
           max_body_bytes: int) -> tuple[int, Any]:
    declared = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if declared.isdigit():
        if int(declared) > max_body_bytes:
            return 413, {"error": "request body too large"}
        data = stream.read(int(declared))
    elif environ.get("wsgi.input_terminated"):
        data = stream.read(max_body_bytes + 1)
        if len(data) > max_body_bytes:
            return 413, {"error": "request body too large"}
    else:
        data = b""
    try:
        return service.handle(data)
    except Exception:  # as Flask's handler of last resort does
        log.exception("unhandled error serving POST /")
        return 500, {"error": "internal error; see the MagTape logs"}


def create_metrics_app(ready: ReadyCheck, settings: Settings, metrics: Metrics,
                       registry: Any = None, process: int = 0,
                       reasons: NotReadyReasons | None = None) -> Flask:
    """The kubelet's and Prometheus' app: /metrics, /healthz and /readyz.

    ``registry``: what /metrics exposes when not ``metrics.registry`` alone (the
    primary's, with its helper processes' counters added; magtape.processes).
    """
    app = Flask("magtape.metrics")
    exposed = registry if registry is not None else metrics.registry

    @app.get("/metrics")
    def scrape() -> Response:
        return Response(generate_latest(exposed), mimetype=CONTENT_TYPE_LATEST)

    _add_health(app, settings, ready, process, reasons)
    _add_error_handlers(app)
    return app


def _add_health(app: Flask, settings: Settings, is_ready: ReadyCheck, process: int,
                reasons: NotReadyReasons | None = None) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"pod_name": settings.identity.pod,
                      "date_time": datetime.now(UTC).isoformat(),
                      "health": "ok", "process": process}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        if is_ready():
            return _json({"ready": True}, 200)
        why = (reasons() if reasons is not None else []) or ["not ready yet: see the log"]
        return _json({"ready": False, "reasons": why}, 503)


def _add_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = {413: "request body too large",
                   404: "not found",
                   405: "method not allowed"}.get(code, exc.name)
        return _json({"error": message}, code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return _json({"error": "internal error; see the MagTape logs"}, 500)


def _json(doc: Any, status: int) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status=status,
                    mimetype="application/json")
