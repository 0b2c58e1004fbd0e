"""HTTP layer: Flask apps for the admission listener and the metrics listener.

Only translation happens here: bytes in, JSON out, status codes counted. The
admission listener (behind the nginx TLS sidecar in a cluster) serves
``POST /``, ``/healthz`` and ``/readyz``; the metrics listener (plain HTTP for
the kubelet and Prometheus) serves ``/metrics``, ``/healthz`` and ``/readyz``.
No request, however malformed, gets a stack trace back. ``POST /`` is answered
by one plain WSGI function in front of Flask (:func:`_admission_wsgi`):
Flask's request machinery cost as much as MagTape's own work per admission
(docs/performance.md), so the admission path never enters it; every other
route is Flask's. Reviews of up to 64 KiB do not even enter WSGI: the
listener answers them in its loop thread through :class:`AdmissionEndpoint`
(magtape.inloop).
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
# The attribute of a waitress request read whole: when it was (time.monotonic()).
RECEIVED_ATTRIBUTE = "magtape_received"

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

    endpoint = AdmissionEndpoint(service, metrics, settings.engine.timeout_seconds)
    # The listener answers small reviews in its own loop thread through it (magtape.inloop).
    app.extensions[ENDPOINT_EXTENSION] = endpoint
    app.wsgi_app = _admission_wsgi(app.wsgi_app, endpoint,  # type: ignore[method-assign,assignment]
                                   settings.http.max_body_bytes)
    return app


# Where create_app keeps its AdmissionEndpoint (Flask's ``app.extensions``).
ENDPOINT_EXTENSION = "magtape.admission"


class AdmissionEndpoint:
    """``POST /``'s answer to a body read whole: status and JSON bytes, counted in
    ``magtape_http_responses_total``. One path for the WSGI endpoint below and for
    the reviews the listener answers in its loop thread (magtape.inloop)."""

    def __init__(self, service: AdmissionService, metrics: Metrics,
                 engine_timeout: float) -> None:
        self._service = service
        self._metrics = metrics
        self.engine_timeout = engine_timeout

    def answer(self, data: bytes, received: float) -> tuple[int, bytes]:
        """The answer to the review ``data``, read whole at ``received`` (time.monotonic()):
        the engine's deadline counts from then, not from when a thread took it."""
        token = REQUEST_DEADLINE.set(received + self.engine_timeout)
        try:
            status, doc = self._service.handle(data)
        except Exception:  # as Flask's handler of last resort does
            log.exception("unhandled error serving POST /")
            status, doc = 500, {"error": "internal error; see the MagTape logs"}
        finally:
            REQUEST_DEADLINE.reset(token)
        return status, self.encode(status, doc)

    def encode(self, status: int, doc: Any) -> bytes:
        """``doc`` as the JSON body of a ``status`` answer, counted."""
        self._metrics.count(self._metrics.http_responses, str(status))
        return json.dumps(doc, separators=(",", ":")).encode()


def _admission_wsgi(flask_app: WSGIApp, endpoint: AdmissionEndpoint,
                    max_body_bytes: int) -> WSGIApp:
    """``/``: the admission endpoint, the only path; every other path goes to Flask.

    The body is read by its Content-Length (waitress sets one for chunked
    requests too, once it has them whole) or, from a server that marks its
    input terminated instead, up to the limit; over the limit is 413. With
    neither, the body is empty (RFC 9112, 6.3), which is a malformed review.
    A defect is a JSON 500, as Flask's handler of last resort answers.
    """
    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/":
            return flask_app(environ, start_response)
        extra: list[tuple[str, str]] = []
        if environ.get("REQUEST_METHOD") != "POST":
            status, body = 405, endpoint.encode(405, {"error": "method not allowed"})
            extra = [("Allow", "POST")]
        else:
            data = _read_body(environ, max_body_bytes)
            if data is None:
                status, body = 413, endpoint.encode(413, {"error": "request body too large"})
            else:
                status, body = endpoint.answer(
                    data, environ.get(RECEIVED_KEY) or time.monotonic())
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))), *extra])
        return [body]

    return wsgi


def _read_body(environ: dict[str, Any], max_body_bytes: int) -> bytes | None:
    """The request body; None when it is over the limit."""
    declared = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if declared.isdigit():
        if int(declared) > max_body_bytes:
            return None
        data: bytes = stream.read(int(declared))
        return data
    if environ.get("wsgi.input_terminated"):
        data = stream.read(max_body_bytes + 1)
        return None if len(data) > max_body_bytes else data
    return b""


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
