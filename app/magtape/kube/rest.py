"""Plain-JSON access to the Kubernetes API over the official client's transport.

MagTape hands cluster objects to Rego as JSON, exactly as the API serves them,
and patches a few fields of Secrets, ConfigMaps and webhook configurations; the
client's typed models would only be converted back and forth. This module is
the one place that knows how the ``kubernetes`` client sends a request (auth,
TLS, proxies come from its ``Configuration``); the rest of ``magtape.kube``
deals in dicts and :class:`KubeError`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from magtape.kube.objects import Obj

MERGE_PATCH = "application/merge-patch+json"
# The message of a 404 for a resource the API server does not serve.
NOT_SERVED = "the server could not find the requested resource"


class KubeError(Exception):
    """An API call failed: an HTTP error Status, or the server was unreachable (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def not_served(self) -> bool:
        """404 for the collection itself: the API server does not serve the resource
        at this version (a CRD not installed), not a missing object."""
        return self.not_found and NOT_SERVED in self.message

    @property
    def conflict(self) -> bool:
        """409: AlreadyExists on create, Conflict on a stale resourceVersion."""
        return self.status == 409


@dataclass(frozen=True)
class ResourceRef:
    """A REST collection: ``v1/namespaces``, ``apps/v1/deployments``."""

    group_version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{name}" if name else "")

    def __str__(self) -> str:
        return f"{self.group_version}/{self.plural}"


NAMESPACES = ResourceRef("v1", "namespaces")
CONFIGMAPS = ResourceRef("v1", "configmaps")
SECRETS = ResourceRef("v1", "secrets")
EVENTS = ResourceRef("events.k8s.io/v1", "events")
VALIDATING_WEBHOOKS = ResourceRef("admissionregistration.k8s.io/v1",
                                  "validatingwebhookconfigurations")


class WatchStream:
    """An open watch: iterate for events (dicts with ``type`` and ``object``).

    :meth:`close` may be called from another thread to end a blocked read.
    """

    def __init__(self, response: urllib3.HTTPResponse) -> None:
        self._response = response
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Obj]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _event(line)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._closed.is_set():
                raise KubeError(0, "WatchBroken", f"watch stream broken: {exc}") from None
        finally:
            self.close()
        if buffer.strip() and not self._closed.is_set():
            yield _event(buffer)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError, AttributeError, RuntimeError):  # already released
            self._response.shutdown()  # wakes a read blocked in another thread
        self._response.release_conn()
        self._response.close()


def _event(line: bytes) -> Obj:
    try:
        event = json.loads(line)
    except ValueError:
        raise KubeError(0, "BadWatchEvent", f"watch event is not JSON: {line[:200]!r}") from None
    if not isinstance(event, dict) or "type" not in event:
        raise KubeError(0, "BadWatchEvent", f"watch event has no type: {line[:200]!r}")
    return event


class RawApi:
    """JSON in, JSON out. Every method raises :class:`KubeError` on failure."""

    def __init__(self, client: ApiClient, timeout_seconds: float = 15.0) -> None:
        self._client = client
        self._timeout = timeout_seconds
        no_retries(client)

    # ---------------------------------------------------------------- verbs
    def get(self, ref: ResourceRef, name: str, namespace: str | None = None) -> Obj:
        return self._json("GET", ref.path(namespace, name))

    def list(self, ref: ResourceRef, namespace: str | None = None,
             label_selector: str | None = None) -> Obj:
        query = {"labelSelector": label_selector} if label_selector else {}
        return self._json("GET", ref.path(namespace), query)

    def create(self, ref: ResourceRef, body: Obj, namespace: str | None = None) -> Obj:
        return self._json("POST", ref.path(namespace), body=body)

    def replace(self, ref: ResourceRef, name: str, body: Obj,
                namespace: str | None = None) -> Obj:
        """PUT; ``body.metadata.resourceVersion`` makes it conditional (409 when stale)."""
        return self._json("PUT", ref.path(namespace, name), body=body)

    def patch(self, ref: ResourceRef, name: str, patch: Any, namespace: str | None = None,
              content_type: str = MERGE_PATCH) -> Obj:
        return self._json("PATCH", ref.path(namespace, name), body=patch,
                          content_type=content_type)

    def delete(self, ref: ResourceRef, name: str, namespace: str | None = None) -> Obj:
        return self._json("DELETE", ref.path(namespace, name))

    def watch(self, ref: ResourceRef, namespace: str | None, resource_version: str,
              label_selector: str | None = None, timeout_seconds: int = 300) -> WatchStream:
        """Open a watch from ``resource_version``; the server ends it after ``timeout_seconds``."""
        query = {"watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "false"}
        if label_selector:
            query["labelSelector"] = label_selector
        # The read timeout outlives the server-side timeout: a silent, dead
        # connection must not hang the watcher forever.
        response = self._send("GET", ref.path(namespace), query,
                              read_timeout=timeout_seconds + 30.0)
        if response.status != 200:
            raise _error(response.status, response.reason or "", response.data)
        return WatchStream(response)

    # ------------------------------------------------------------ transport
    def _json(self, method: str, path: str, query: Mapping[str, str] | None = None,
              body: Any = None, content_type: str | None = None) -> Obj:
        response = self._send(method, path, query, body, content_type)
        try:
            data = response.data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"{method} {path}: {exc}") from None
        finally:
            response.release_conn()
        if not 200 <= response.status <= 299:
            raise _error(response.status, response.reason or "", data)
        try:
            doc = json.loads(data)
        except ValueError:
            raise KubeError(response.status, "BadResponse",
                            f"{method} {path} did not answer JSON") from None
        if not isinstance(doc, dict):
            raise KubeError(response.status, "BadResponse", f"{method} {path}: not an object")
        return doc

    def _send(self, method: str, path: str, query: Mapping[str, str] | None = None,
              body: Any = None, content_type: str | None = None,
              read_timeout: float | None = None) -> urllib3.HTTPResponse:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            request = self._client.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()),
                header_params=headers, body=body, auth_settings=["BearerToken"])
            rest = self._client.call_api(*request, _request_timeout=(
                self._timeout, read_timeout or self._timeout))
        except ApiException as exc:  # TLS failures surface here with status 0
            raise KubeError(0, "Unreachable", f"{method} {path}: {exc.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"the API server {self._client.configuration.host} "
                            f"is unreachable ({unreachable_cause(exc)}): {method} {path}"
                            ) from None
        response: urllib3.HTTPResponse = rest.response
        return response


def no_retries(client: ApiClient) -> None:
    """Make ``client`` try each request once.

    urllib3 retries a refused connection three times by default and logs a
    ``Retrying (Retry(total=2, ...))`` warning for each: with the API server
    down that was most of MagTape's log. Every caller here has a back-off of
    its own (the reflectors, leader election, the notifier) and logs once per
    step of it, saying why (:func:`unreachable_cause`).
    """
    client.configuration.retries = False
    pool = getattr(getattr(client, "rest_client", None), "pool_manager", None)
    if pool is not None:  # the pool manager was built from the configuration already
        pool.connection_pool_kw["retries"] = False
        pool.clear()  # pools made before this one keep their own retries otherwise


def unreachable_cause(exc: BaseException) -> str:
    """Why a request got no HTTP answer, in the words an operator searches for."""
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the cause
    if isinstance(reason, BaseException):
        exc = reason
    text = str(exc).lower()
    if isinstance(exc, urllib3.exceptions.SSLError) or "certificate" in text:
        return f"TLS error: {exc}"
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.NameResolutionError) or "name or service" in text:
        return "host name not resolved"
    if isinstance(exc, urllib3.exceptions.TimeoutError) or "timed out" in text:
        return "timed out"
    if "remote end closed" in text or "connection reset" in text:
        return "the connection was closed without an answer"
    return str(exc)


def _error(status: int, reason: str, data: bytes | None) -> KubeError:
    """A KubeError from an error response, using its Status object when there is one."""
    message = (data or b"").decode(errors="replace")[:500]
    try:
        doc = json.loads(data or b"")
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            return KubeError(status, str(doc.get("reason") or reason),
                             str(doc.get("message") or message))
    except ValueError:
        pass
    return KubeError(status, reason, message)
