"""The shared in-process fake Kubernetes API server used by every test that talks to "the cluster".

No real API server can run on the build machines, so tests drive MagTape's
Kubernetes adapters through the real ``kubernetes`` client against this small
threaded HTTP server on ``127.0.0.1:<free port>``. It speaks the real REST paths
and JSON shapes and keeps the semantics the adapters rely on; what it does not
cover it refuses loudly (404 for an unknown resource, 415 for apply patches,
400 for unsupported field selectors) instead of pretending.

Paths (``<gv>`` is ``api/v1`` or ``apis/<group>/<version>``)::

    GET    /<gv>/<plural>                             list (namespaced kinds: all namespaces)
    GET    /<gv>/<plural>?watch=true                  watch
    GET    /<gv>/namespaces/<ns>/<plural>             list  (+ ?watch=true)
    POST   /<gv>/[namespaces/<ns>/]<plural>           create (generateName supported)
    GET    /<gv>/[namespaces/<ns>/]<plural>/<name>    read
    PUT    /<gv>/[namespaces/<ns>/]<plural>/<name>    replace (resourceVersion precondition)
    PATCH  /<gv>/[namespaces/<ns>/]<plural>/<name>    merge, strategic (as merge), JSON patch
    DELETE /<gv>/[namespaces/<ns>/]<plural>/<name>    delete (a Success Status, or the
                                                      object for Services, Pods, Namespaces)

Resources: v1 namespaces, configmaps, secrets, services, pods, events;
events.k8s.io/v1 events; apps/v1 deployments;
admissionregistration.k8s.io/v1 validatingwebhookconfigurations
(:meth:`FakeKube.register` adds more).

Semantics kept from the real server: uid, creationTimestamp and a
monotonically increasing resourceVersion (one counter for everything); lists
carry the collection's resourceVersion and omit items' apiVersion/kind;
``labelSelector`` (``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (..)``,
``k notin (..)``) and ``fieldSelector`` on ``metadata.name`` /
``metadata.namespace``; create gives 409 AlreadyExists, replace and patch
with a stale ``metadata.resourceVersion`` give 409 Conflict; an update that
changes nothing writes nothing (same resourceVersion, no watch event);
Secret ``stringData`` is folded into base64 ``data``; every error body is a
``Status`` object (400, 404, 405, 409, 410, 415, 422, 500); watches stream
newline-delimited ADDED/MODIFIED/DELETED events over chunked encoding, start
with synthetic ADDED events when no resourceVersion is given, honour
``timeoutSeconds``, and report a too-old resourceVersion as an ERROR event
carrying a 410 Expired Status.

Deliberate simplifications: no authentication, admission, defaulting,
finalizers or graceful deletion (a deleted Namespace vanishes at once and
keeps its contents), objects may be created in namespaces that do not exist,
``limit``/``continue`` are ignored (the whole list is returned, as the API
allows), no bookmarks, no server-side apply, no subresources.

Test hooks: :meth:`FakeKube.seed`, :meth:`get`, :meth:`list`,
:meth:`fail` (fault injection), :meth:`end_watches` (close streams, or end
them with an ERROR event such as 410), :meth:`compact`,
:meth:`rendezvous` (hold N matching requests until all arrived, to force
races), :attr:`requests` (the request log) and :meth:`wait_for`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes.client import ApiClient, Configuration

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives and what kind its objects are."""

    group_version: str  # "v1", "apps/v1"
    plural: str
    kind: str
    namespaced: bool
    delete_returns_object: bool = False  # as the real registry: else a Success Status

    @property
    def qualified(self) -> str:
        """The resource name the real server uses in messages ("configmaps", "x.apps")."""
        group = self.group_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural


DEFAULT_RESOURCES = (
    Resource("v1", "namespaces", "Namespace", False, delete_returns_object=True),
    Resource("v1", "configmaps", "ConfigMap", True),
    Resource("v1", "secrets", "Secret", True),
    Resource("v1", "services", "Service", True, delete_returns_object=True),
    Resource("v1", "pods", "Pod", True, delete_returns_object=True),
    Resource("v1", "events", "Event", True),
    Resource("events.k8s.io/v1", "events", "Event", True),
    Resource("apps/v1", "deployments", "Deployment", True),
    Resource("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
             "ValidatingWebhookConfiguration", False),
)

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ApiError(Exception):
    """Raised inside the fake; turned into an HTTP error with a Status body."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
        410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError",
        503: "ServiceUnavailable"}

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.message = message
        self.details = details

    def status(self) -> Obj:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (for asserting what was called)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str = ""  # the Authorization header (tests check the token is sent)

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class Fault:
    """Answer matching requests with ``status`` instead of serving them."""

    status: int
    method: str | None
    path: re.Pattern[str] | None
    remaining: int | None  # None: until cleared
    message: str

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path.search(path) is not None))


@dataclass
class _Rendezvous:
    barrier: threading.Barrier
    method: str | None
    path: re.Pattern[str] | None
    left: int


@dataclass(frozen=True)
class _Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: Resource
    namespace: str
    old: Obj | None
    new: Obj


@dataclass
class _Target:
    """A parsed request path."""

    resource: Resource
    ns: str  # "" for cluster-scoped kinds or all namespaces
    name: str  # "" for collections


# ---------------------------------------------------------------- selectors
@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # != and notin


def parse_label_selector(text: str) -> list[_Requirement]:
    """Parse a label selector the way the API server does (ValueError when malformed)."""
    reqs: list[_Requirement] = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^()]*)\)", raw)
        if m:
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(_Requirement(m.group(1), m.group(2), values))
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", raw)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(_Requirement(m.group(1), op, frozenset({m.group(3)})))
            continue
        m = re.fullmatch(r"(!?)([\w./-]+)", raw)
        if m:
            reqs.append(_Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
            continue
        raise ValueError(f"unable to parse requirement: {raw!r}")
    return reqs


def _field_filter(text: str) -> Callable[[Obj], bool]:
    """Field selectors on metadata.name / metadata.namespace (=, ==, !=)."""
    checks: list[tuple[str, bool, str]] = []
    for raw in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)", raw)
        if not m:
            raise ApiError(400, f'"{raw.split("=")[0].rstrip("!")}" is not a known field '
                                "selector: only \"metadata.name\", \"metadata.namespace\"")
        checks.append((m.group(1).split(".")[1], m.group(2) != "!=", m.group(3)))

    def ok(obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        return all((meta.get(f, "") == v) == eq for f, eq, v in checks)

    return ok


# ------------------------------------------------------------------ patches
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); ValueError on failure."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def walk(pointer: str) -> tuple[Any, str]:
        if not pointer.startswith("/"):
            raise ValueError(f"invalid JSON pointer {pointer!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
        parent = doc
        for t in tokens[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        return parent, tokens[-1]

    def get(pointer: str) -> Any:
        if pointer == "":
            return doc
        parent, key = walk(pointer)
        return parent[int(key)] if isinstance(parent, list) else parent[key]

    def add(pointer: str, value: Any) -> None:
        parent, key = walk(pointer)
        if isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), value)
        else:
            parent[key] = value

    def remove(pointer: str) -> Any:
        parent, key = walk(pointer)
        return parent.pop(int(key) if isinstance(parent, list) else key)

    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ValueError(f"test operation failed at {path}")
            else:
                raise ValueError(f"unknown operation {kind!r}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"cannot apply {op!r}: {exc!r}") from None
    return doc


# ------------------------------------------------------------------- server
class FakeKube:
    """The fake API server; start with ``with FakeKube() as kube`` or the fixture."""

    def __init__(self) -> None:
        self._resources: dict[tuple[str, str], Resource] = {}
        for r in DEFAULT_RESOURCES:
            self.register(r)
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[tuple[Resource, str, str], Obj] = {}
        self._history: list[_Change] = []
        self._rv = 0
        self._floor = 0  # watches from a resourceVersion below this get 410
        self._watch_epoch = 0
        # (epoch, error code, resourceVersion when ended): streams opened before
        # that epoch end after delivering the changes up to that version.
        self._watch_ending: tuple[int, int | None, int] = (0, None, 0)
        self._open_watches = 0
        self._closing = False
        self.faults: list[Fault] = []
        self._rendezvous: list[_Rendezvous] = []
        self.requests: list[RecordedRequest] = []
        self._clients: list[ApiClient] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fakekube", daemon=True)

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for client in self._clients:
            client.close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def api_client(self) -> ApiClient:
        """A real kubernetes ApiClient pointed at this server."""
        config = Configuration(host=self.url)
        client = ApiClient(config)
        self._clients.append(client)
        return client

    def register(self, resource: Resource) -> None:
        self._resources[(resource.group_version, resource.plural)] = resource

    # ---------------------------------------------------------- test hooks
    def seed(self, *objects: Obj) -> list[Obj]:
        """Create or replace objects directly (no faults, not logged); watchers see them."""
        out = []
        with self._cond:
            for obj in objects:
                res = self._resource_for(obj)
                ns = obj.get("metadata", {}).get("namespace", "") if res.namespaced else ""
                if res.namespaced and not ns:
                    raise ValueError(f"seeding a {res.kind} needs metadata.namespace")
                key = (res, ns, obj["metadata"]["name"])
                body = _normalise(res, copy.deepcopy(obj), ns)
                old = self._objects.get(key)
                if old is not None:
                    body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
                    out.append(self._write(res, ns, body, old))
                else:
                    body["metadata"].pop("resourceVersion", None)
                    out.append(self._write(res, ns, body, None))
        return out

    def get(self, group_version: str, plural: str, name: str,
            namespace: str = "") -> Obj | None:
        """The stored object (a copy), or None."""
        with self._cond:
            obj = self._objects.get((self._resources[(group_version, plural)], namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, group_version: str, plural: str, namespace: str | None = None) -> list[Obj]:
        with self._cond:
            res = self._resources[(group_version, plural)]
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items(),
                                                                   key=lambda kv: kv[0][1:])
                    if r == res and (namespace is None or ns == namespace)]

    def delete(self, group_version: str, plural: str, name: str, namespace: str = "") -> None:
        """Delete directly (no faults, not logged); watchers see it."""
        with self._cond:
            res = self._resources[(group_version, plural)]
            self._delete(res, namespace, name)

    def fail(self, status: int = 500, *, method: str | None = None, path: str | None = None,
             times: int | None = None, message: str = "injected fault") -> Fault:
        """Answer matching requests (``path`` is a regex searched in the path) with ``status``.

        ``times=None`` keeps failing until :meth:`clear_faults` (or ``faults.remove``).
        """
        fault = Fault(status, method, re.compile(path) if path else None, times, message)
        with self._cond:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._cond:
            self.faults.clear()

    def end_watches(self, error: int | None = None) -> None:
        """End every open watch stream: cleanly, or with an ERROR event carrying ``error``.

        ``error=410`` also compacts history (see :meth:`compact`), so resuming
        from the last resourceVersion fails too and the client must list again.
        """
        with self._cond:
            if error == 410:
                self._compact()
            self._watch_epoch += 1
            self._watch_ending = (self._watch_epoch, error, self._rv)
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget history: every resourceVersion handed out so far becomes too old to watch."""
        with self._cond:
            self._compact()

    def rendezvous(self, parties: int, *, method: str | None = None,
                   path: str | None = None, timeout: float = 10.0) -> None:
        """Hold the next ``parties`` matching requests until all of them arrived.

        Forces races: two clients that both read, then both write.
        """
        with self._cond:
            self._rendezvous.append(_Rendezvous(threading.Barrier(parties, timeout=timeout),
                                                method, re.compile(path) if path else None,
                                                parties))

    @property
    def open_watches(self) -> int:
        with self._cond:
            return self._open_watches

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def requests_matching(self, method: str | None = None, path: str | None = None,
                          watch: bool | None = None) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests
                    if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))
                    and (watch is None or r.is_watch == watch)]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy, re-checking after every request and write."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    # ------------------------------------------------------------- storage
    def _compact(self) -> None:
        # Unrelated writes move a real cluster's resourceVersion on all the time;
        # one step here makes every version handed out so far too old to resume from.
        self._rv += 1
        self._floor = self._rv
        self._history.clear()

    def _resource_for(self, obj: Obj) -> Resource:
        for r in self._resources.values():
            if r.group_version == obj.get("apiVersion") and r.kind == obj.get("kind"):
                return r
        raise ValueError(f"unknown apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}")

    def _write(self, res: Resource, ns: str, body: Obj, old: Obj | None) -> Obj:
        """Store ``body`` (already validated); record the change. Caller holds the lock."""
        meta = body["metadata"]
        if old is not None:
            for keep in ("uid", "creationTimestamp"):
                meta[keep] = old["metadata"][keep]
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if body == old:  # the real server skips no-op writes
                return copy.deepcopy(old)
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[(res, ns, meta["name"])] = body
        self._history.append(_Change(self._rv, "MODIFIED" if old else "ADDED", res, ns,
                                     old, copy.deepcopy(body)))
        self._cond.notify_all()
        return copy.deepcopy(body)

    def _delete(self, res: Resource, ns: str, name: str) -> Obj:
        old = self._objects.pop((res, ns, name), None)
        if old is None:
            raise _not_found(res, name)
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append(_Change(self._rv, "DELETED", res, ns, old, gone))
        self._cond.notify_all()
        return old

    # ------------------------------------------------------------ handling
    def _record(self, req: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def _injected(self, method: str, path: str) -> Fault | None:
        with self._cond:
            for fault in self.faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    return fault
            hold = next((r for r in self._rendezvous if r.left > 0
                         and (r.method is None or r.method == method)
                         and (r.path is None or r.path.search(path))), None)
            if hold is not None:
                hold.left -= 1
                if hold.left == 0:
                    self._rendezvous.remove(hold)
        if hold is not None:
            hold.barrier.wait()  # outside the lock: the other parties must get in
        return None

    def _parse_path(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            gv, rest = parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        ns = ""
        if (len(rest) >= 3 and rest[0] == "namespaces"
                and (res := self._resources.get((gv, rest[2]))) and res.namespaced):
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 2 or (gv, rest[0]) not in self._resources:
            raise ApiError(404, "the server could not find the requested resource")
        res = self._resources[(gv, rest[0])]
        name = rest[1] if len(rest) == 2 else ""
        if res.namespaced and name and not ns:
            raise ApiError(404, "the server could not find the requested resource")
        return _Target(res, ns, name)

    def handle(self, method: str, path: str, query: dict[str, str], ctype: str,
               body: Any) -> tuple[int, Obj]:
        """Serve one non-watch request; raises ApiError for error answers."""
        t = self._parse_path(path)
        res = t.resource
        with self._cond:
            if method == "GET" and t.name:
                obj = self._objects.get((res, t.ns, t.name))
                if obj is None:
                    raise _not_found(res, t.name)
                return 200, copy.deepcopy(obj)
            if method == "GET":
                return 200, self._list(t, query)
            if method == "POST" and not t.name:
                if res.namespaced and not t.ns:
                    raise ApiError(405, f"POST is not supported on all-namespaces {res.plural}")
                body = self._validated(t, body)
                name = body["metadata"]["name"]
                if (res, t.ns, name) in self._objects:
                    raise ApiError(409, f'{res.qualified} "{name}" already exists',
                                   "AlreadyExists", {"name": name, "kind": res.plural})
                body["metadata"].pop("resourceVersion", None)
                if query.get("dryRun"):
                    return 201, body
                return 201, self._write(res, t.ns, body, None)
            if not t.name:
                raise ApiError(405, f"{method} is not supported on a collection")
            old = self._objects.get((res, t.ns, t.name))
            if old is None:
                raise _not_found(res, t.name)
            if method == "DELETE":
                gone = self._delete(res, t.ns, t.name)
                if res.delete_returns_object:
                    return 200, gone
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Success",
                             "details": {"name": t.name, "kind": res.plural,
                                         "uid": gone["metadata"]["uid"]}}
            if method == "PATCH":
                body = self._patched(old, ctype, body)
            elif method != "PUT":
                raise ApiError(405, f"{method} is not supported")
            body = self._validated(t, body)
            wanted_rv = body["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, f'Operation cannot be fulfilled on {res.qualified} '
                                    f'"{t.name}": the object has been modified; please apply '
                                    "your changes to the latest version and try again",
                               "Conflict", {"name": t.name, "kind": res.plural})
            if query.get("dryRun"):
                return 200, body
            return 200, self._write(res, t.ns, body, old)

    def _list(self, t: _Target, query: dict[str, str]) -> Obj:
        match = self._matcher(query)
        items = []
        for (r, ns, _), obj in sorted(self._objects.items(), key=lambda kv: kv[0][1:]):
            if r == t.resource and (not t.ns or ns == t.ns) and match(obj):
                item = copy.deepcopy(obj)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        return {"kind": f"{t.resource.kind}List", "apiVersion": t.resource.group_version,
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    @staticmethod
    def _matcher(query: dict[str, str]) -> Callable[[Obj], bool]:
        try:
            reqs = parse_label_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        fields = _field_filter(query.get("fieldSelector", ""))

        def match(obj: Obj) -> bool:
            labels = obj.get("metadata", {}).get("labels") or {}
            return fields(obj) and all(r.matches(labels) for r in reqs)

        return match

    def _validated(self, t: _Target, body: Any) -> Obj:
        res = t.resource
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        body = copy.deepcopy(body)
        for attr, want in (("apiVersion", res.group_version), ("kind", res.kind)):
            got = body.setdefault(attr, want)
            if got != want:
                raise ApiError(400, f"the {attr} in the data ({got}) does not match the "
                                    f"expected {attr} ({want})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        for m in ("labels", "annotations"):
            value = meta.get(m)
            if value is not None and not (isinstance(value, dict) and all(
                    isinstance(v, str) for v in value.values())):
                raise ApiError(400, f"metadata.{m} must map strings to strings")
        if not meta.get("name") and meta.get("generateName") and not t.name:
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        if t.name and name != t.name:
            raise ApiError(400, f"the name of the object ({name}) does not match the name on "
                                f"the URL ({t.name})")
        if not name or len(name) > 253 or not _NAME_RE.match(name):
            raise ApiError(422, f'{res.kind} "{name}" is invalid: metadata.name: Invalid '
                                f"value: {name!r}: a lowercase RFC 1123 subdomain is required",
                           details={"name": name, "kind": res.kind, "causes": [
                               {"reason": "FieldValueInvalid", "field": "metadata.name"}]})
        if res.namespaced:
            if meta.setdefault("namespace", t.ns) != t.ns:
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
        else:
            meta.pop("namespace", None)
        return _normalise(res, body, t.ns)

    @staticmethod
    def _patched(old: Obj, ctype: str, patch: Any) -> Obj:
        kind = ctype.split(";")[0].strip()
        if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            result = merge_patch(old, patch)
            if "resourceVersion" not in patch.get("metadata", {}):
                result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return dict(result)
        if kind == "application/json-patch+json":
            try:
                return dict(json_patch(old, patch))
            except ValueError as exc:
                raise ApiError(422, f"the JSON patch could not be applied: {exc}") from None
        raise ApiError(415, f"the patch content type {kind!r} is not supported by the fake "
                            "API (merge, strategic-merge and JSON patch are)")

    # --------------------------------------------------------------- watch
    def watch(self, path: str, query: dict[str, str], opened: Callable[[], None],
              emit: Callable[[Obj], None]) -> None:
        """Validate, call ``opened`` (response headers), stream events through ``emit``."""
        t = self._parse_path(path)
        if t.name:
            raise ApiError(405, "watch a collection (use fieldSelector=metadata.name=...)")
        match = self._matcher(query)
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout else None
        raw_rv = query.get("resourceVersion", "")
        with self._cond:
            epoch = self._watch_epoch
            self._open_watches += 1
            backlog: list[Obj] = []
            if raw_rv in ("", "0"):
                since = self._rv
                for (r, ns, _), obj in sorted(self._objects.items(), key=lambda kv: kv[0][1:]):
                    if r == t.resource and (not t.ns or ns == t.ns) and match(obj):
                        backlog.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            else:
                try:
                    since = int(raw_rv)
                except ValueError:
                    self._open_watches -= 1
                    raise ApiError(400, f"invalid resourceVersion {raw_rv!r}") from None
                if since < self._floor:
                    backlog.append({"type": "ERROR", "object": status_object(
                        410, "Expired", f"too old resource version: {since} ({self._floor})")})
        try:
            opened()
            for event in backlog:
                emit(event)
                if event["type"] == "ERROR":
                    return
            while True:
                with self._cond:
                    end_epoch, end_code, end_rv = self._watch_ending
                    ended = self._closing or end_epoch > epoch
                    events = []
                    for change in self._history:
                        if change.rv <= since:
                            continue
                        if ended and change.rv > end_rv:
                            break  # written after the stream was ended: not for this stream
                        since = change.rv
                        ev = self._event_for(change, t, match)
                        if ev is not None:
                            events.append(ev)
                    if not events:
                        if ended and end_code is not None and not self._closing:
                            reason = "Expired" if end_code == 410 else ApiError.REASONS.get(
                                end_code, "InternalError")
                            msg = (f"too old resource version: {since} ({self._floor})"
                                   if end_code == 410 else "injected watch error")
                            events = [{"type": "ERROR",
                                       "object": status_object(end_code, reason, msg)}]
                        elif ended or (deadline is not None and time.monotonic() >= deadline):
                            return
                        else:
                            wait = 0.5 if deadline is None else max(
                                0.0, min(0.5, deadline - time.monotonic()))
                            self._cond.wait(wait)
                            continue
                for event in events:
                    emit(event)
                    if event["type"] == "ERROR":
                        return
        finally:
            with self._cond:
                self._open_watches -= 1
                self._cond.notify_all()

    @staticmethod
    def _event_for(change: _Change, t: _Target,
                   match: Callable[[Obj], bool]) -> Obj | None:
        if change.resource != t.resource or (t.ns and change.namespace != t.ns):
            return None
        new_ok = match(change.new)
        if change.type == "DELETED":
            return {"type": "DELETED", "object": copy.deepcopy(change.new)} if new_ok else None
        old_ok = change.old is not None and match(change.old)
        if new_ok:
            return {"type": "MODIFIED" if old_ok else "ADDED", "object": copy.deepcopy(change.new)}
        if old_ok:  # no longer selected: watchers see it leave
            return {"type": "DELETED", "object": copy.deepcopy(change.new)}
        return None


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', "NotFound",
                    {"name": name, "kind": res.plural})


def _normalise(res: Resource, body: Obj, ns: str) -> Obj:
    """What the real server stores: apiVersion/kind set, Secret stringData folded into data."""
    body["apiVersion"], body["kind"] = res.group_version, res.kind
    meta = body.setdefault("metadata", {})
    if res.namespaced:
        meta["namespace"] = ns or meta.get("namespace", "")
    if res.kind == "Secret":
        data = body.get("data") or {}
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ApiError(400, f"Secret data[{key!r}] is not valid base64") from None
        for key, value in (body.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        body["data"] = data
        body.setdefault("type", "Opaque")
    return body


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hang up; that is fine
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (the client pools connections); watches use chunked encoding."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is kept in FakeKube.requests

    def _serve(self) -> None:
        fake: FakeKube = self.server.fake
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type") or ""
        auth = self.headers.get("Authorization") or ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
            fake._record(RecordedRequest(self.command, split.path, query, ctype, body, auth))
            self._send(400, ApiError(400, "the request body is not valid JSON").status())
            return
        req = RecordedRequest(self.command, split.path, query, ctype, body, auth)
        fake._record(req)
        try:
            fault = fake._injected(self.command, split.path)
            if fault is not None:
                raise ApiError(fault.status, fault.message)
            if self.command == "GET" and req.is_watch:
                self._watch(fake, split.path, query)
                return
            code, out = fake.handle(self.command, split.path, query, ctype, body)
        except ApiError as exc:
            self._send(exc.code, exc.status())
            return
        except threading.BrokenBarrierError:
            self._send(500, ApiError(500, "rendezvous timed out").status())
            return
        except Exception as exc:  # a bug in the fake: say so instead of dropping the connection
            self._send(500, ApiError(500, f"fake API bug: {exc!r}").status())
            raise
        self._send(code, out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _send(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, fake: FakeKube, path: str, query: dict[str, str]) -> None:
        def opened() -> None:  # like the real server: headers first, events as they come
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def emit(event: Obj) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

        try:
            fake.watch(path, query, opened, emit)  # ApiError before opened(): a plain error
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """A running fake API server; ``fake_kube.api_client()`` gives a real client for it."""
    with FakeKube() as kube:
        yield kube
