"""The page's Flask app: read-only, server-rendered, from memory only.

The factory only wires: routes translate the query string into a
:class:`~magtape.ui.model.Query`, ask the :class:`~magtape.ui.model.Model`
(which never calls the API server) and render a template. Only GET and HEAD
exist; every parameter a client sends is bounded and validated, unknown ones
are ignored. Responses forbid framing, scripts, and any asset from elsewhere
(Content-Security-Policy), and are never cached: the page shows live state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, redirect, request
from werkzeug.exceptions import HTTPException

from magtape.ui.model import NAMESPACE_SORTS, Model, Query
from magtape.ui.rows import SEVERITIES
from magtape.ui.templates import render

VIEWS = (("namespaces", "Namespaces"), ("checks", "Checks"),
         ("admissions", "Blocked and warned admissions"), ("exceptions", "Exceptions"))
HEADINGS = dict(VIEWS)
MAX_NAME = 253  # a namespace name
MAX_CHECK = 253  # a policy's errcode is any string; longer ones cannot be asked for
MAX_PAGE = 1_000_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# Host names the page answers to besides those given (--allowed-host): a browser
# on the admin's machine reaches it through kubectl port-forward as one of these.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def create_app(model: Model, allowed_hosts: Iterable[str] = ()) -> Flask:
    """``allowed_hosts``: names (no port) besides loopback a browser may call the page by."""
    app = Flask("magtape.ui")
    hosts = LOOPBACK_HOSTS | {h.lower() for h in allowed_hosts}

    @app.before_request
    def known_host() -> Response | None:
        """Only requests addressed to the page's own names: a web page whose name
        an attacker re-points to 127.0.0.1 (DNS rebinding) must not read it through
        the admin's browser and port-forward."""
        try:
            name = urlsplit("//" + request.host).hostname or ""
        except ValueError:
            name = ""
        if name.lower() in hosts:
            return None
        return Response("421 the page answers only to " + ", ".join(sorted(hosts))
                        + " (magtape ui --allowed-host NAME for a proxy's)\n", status=421,
                        mimetype="text/plain")

    @app.get("/")
    def index() -> Any:
        return redirect("/namespaces", code=302)

    @app.get("/namespaces")
    def namespaces() -> str:
        q = query(request.args)
        return _page(model, "namespaces", q, page=model.namespace_rows(q))

    @app.get("/checks")
    def checks() -> str:
        q = query(request.args)
        groups, page = model.check_groups(q)
        return _page(model, "checks", q, summaries=model.check_summaries(q), groups=groups,
                     page=page)

    @app.get("/admissions")
    def admissions() -> str:
        q = query(request.args)
        h = model.history
        return _page(model, "admissions", q, page=model.admissions(q), history_since=h.since,
                     history_capacity=h.capacity, history_dropped=h.dropped)

    @app.get("/exceptions")
    def exceptions() -> str:
        q = query(request.args)
        return _page(model, "exceptions", q, page=model.exception_rows(q))

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready once every watch listed once: before that the page would show nothing."""
        stale = model.health.status()
        if stale and stale.never_synced:
            return Response(f"waiting for {', '.join(stale.never_synced)}\n", status=503,
                            mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return Response(f"{exc.code} {exc.name}\n", status=exc.code or 500,
                        mimetype="text/plain")

    @app.errorhandler(Exception)
    def crash(_exc: Exception) -> Response:  # never a stack trace to the browser
        app.logger.exception("rendering %s failed", request.path)
        return Response("500 the page could not be rendered; see the log\n", status=500,
                        mimetype="text/plain")

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def query(args: Mapping[str, str]) -> Query:
    """The filters, sort and page a client asked for, bounded; bad values mean "none"."""
    severity = args.get("severity", "")
    sort = args.get("sort", "failing")
    try:
        page = min(max(1, int(args.get("page", "1"))), MAX_PAGE)
    except ValueError:
        page = 1
    return Query(namespace=args.get("namespace", "").strip()[:MAX_NAME],
                 check=args.get("check", "").strip()[:MAX_CHECK],
                 severity=severity if severity in SEVERITIES else "",
                 sort=sort if sort in NAMESPACE_SORTS else "failing",
                 descending=args.get("order", "desc" if sort not in ("name", "pss") else "asc")
                 != "asc",
                 page=page)


def _link(q: Query, endpoint: str, **changes: Any) -> str:
    """``/endpoint?...``: the current filters with ``changes`` (None drops a parameter)."""
    params: dict[str, Any] = {"namespace": q.namespace, "check": q.check,
                              "severity": q.severity}
    if endpoint == "namespaces":
        params.update(sort=q.sort, order="desc" if q.descending else "asc")
    if q.page > 1:
        params["page"] = q.page
    params.update(changes)
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"/{endpoint}" + (f"?{urlencode(kept)}" if kept else "")


def _page(model: Model, view: str, q: Query, **context: Any) -> str:
    return render(f"{view}.html", view=view, views=VIEWS, heading=HEADINGS[view], q=q,
                  now=model.clock(), stale=model.health.status(),
                  default_level=model.default_level.value, check_ids=model.check_ids(),
                  severities=SEVERITIES,
                  link=lambda endpoint, **changes: _link(q, endpoint, **changes), **context)
