"""HTTP layer: Flask apps for the admission listener and the metrics listener.

Only translation happens here: bytes in, JSON out, status codes counted. The
admission listener (behind the nginx TLS sidecar in a cluster) serves
``POST /``, ``/healthz`` and ``/readyz``; the metrics listener (plain HTTP for
the kubelet and Prometheus) serves ``/metrics``, ``/healthz`` and ``/readyz``.
No request, however malformed, gets a stack trace back. The common admission
request skips Flask's request machinery (:func:`_admission_fast_path`): the
one place where the framework cost as much as MagTape's own work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from magtape.admission import AdmissionService
from magtape.metrics import Metrics
from magtape.settings import Settings

log = logging.getLogger(__name__)

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

    @app.post("/")
    def admit() -> Response:
        status, doc = service.handle(request.get_data(cache=False))
        return _json(doc, status)

    _add_health(app, settings, ready, process, reasons)
    _add_error_handlers(app)

    @app.after_request
    def count(response: Response) -> Response:
        metrics.count(metrics.http_responses, str(response.status_code))
        return response

    app.wsgi_app = _admission_fast_path(app.wsgi_app, service, metrics,  # type: ignore[method-assign,assignment]
                                        settings.http.max_body_bytes)
    return app


def _admission_fast_path(flask_app: WSGIApp, service: AdmissionService, metrics: Metrics,
                         max_body_bytes: int) -> WSGIApp:
    """``POST /`` with a declared length within the limit, answered without Flask.

    Flask's request context, routing and response objects cost ~200 µs of
    CPU per request under waitress, as much as the rest of MagTape's own
    Python path (docs/performance.md). The common admission request is
    answered here with exactly what ``admit`` would answer (the same
    handler, JSON body, status and counter); everything else (other routes
    and methods, no or a bad Content-Length, a body over the limit) goes to
    Flask, which answers it as before.
    """
    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH")
        if (environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != "/"
                or not declared or not declared.isdigit() or int(declared) > max_body_bytes):
            return flask_app(environ, start_response)
        try:
            status, doc = service.handle(environ["wsgi.input"].read(int(declared)))
        except Exception:  # as Flask's handler of last resort does
            log.exception("unhandled error serving POST /")
            status, doc = 500, {"error": "internal error; see the MagTape logs"}
        body = json.dumps(doc, separators=(",", ":")).encode()
        metrics.count(metrics.http_responses, str(status))
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


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
