"""The ``opa`` engine: an OPA sidecar queried over its REST Data API.

For clusters that already run OPA with kube-mgmt: kube-mgmt loads the same
policy ConfigMaps into OPA, and MagTape asks OPA for the gathering rule
``data.magtape.main.decisions`` (policies/lib/main.rego), which returns, per
applicable policy, its metadata and ``deny`` set. Policy loading is OPA's job,
so this engine is only an :class:`~magtape.engine.Evaluator` and the server
builds no policy store for it. ``ready`` reflects the last contact with OPA
(a request or a health check at most every few seconds), so readiness probes
cost no network call each; each health check also counts the policies OPA
holds, for ``magtape_policies_loaded``.

The documents MagTape's own settings put into ``data`` (the cluster-wide Pod
Security default, ``data.magtape.pod_security``) are not kube-mgmt's to load:
this engine writes them with the Data API before its first evaluation, again
after any failed contact (OPA may have restarted and lost them), and checks
them at every health check, so both engines evaluate against the same data.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests

from magtape.engine import EngineError, Reason, time_left
from magtape.engine.policyset import MetadataError, parse_metadata, read_deny
from magtape.policy import Evaluation, PolicyError, PolicyResult
from magtape.review import Review

log = logging.getLogger(__name__)

DECISIONS_PATH = "/v1/data/magtape/main/decisions"
# The policies OPA holds, as data.magtape.main.decisions selects them: an ad-hoc
# query, so it needs no rule of its own in a lib the user may have pinned.
COUNT_QUERY = "n := count({pkg | some pkg; data.kubernetes.admission[pkg].policy_metadata})"
# How long one contact with OPA vouches for readiness.
HEALTH_TTL_SECONDS = 5.0


class OpaEngine:
    def __init__(self, base_url: str, timeout_seconds: float,
                 session: requests.Session | None = None,
                 documents: Mapping[str, Any] | None = None) -> None:
        """``documents``: Data API paths (``magtape/pod_security``) and the value each must hold."""
        self._url = base_url.rstrip("/") + DECISIONS_PATH
        self._health = base_url.rstrip("/") + "/health"
        self._query_url = base_url.rstrip("/") + "/v1/query"
        self._policies = 0
        self._data_url = base_url.rstrip("/") + "/v1/data/"
        self._documents = {path.strip("/"): value for path, value in (documents or {}).items()}
        self._written = not self._documents  # written since the last failed contact
        self._timeout = timeout_seconds
        self._session = session or requests.Session()
        self._healthy_until = 0.0
        self._healthy = False
        self._health_lock = threading.Lock()

    def evaluate(self, review: Review) -> Evaluation:
        if not self._written:
            self._write_documents()
        body = '{"input":' + review.raw + "}"
        left = time_left(self._timeout)
        try:
            resp = self._session.post(self._url, data=body, timeout=left,
                                      headers={"Content-Type": "application/json"})
        except requests.RequestException as exc:
            self._mark(False)
            reason: Reason = "timeout" if isinstance(exc, requests.Timeout) else "unavailable"
            raise EngineError(reason, f"OPA at {self._url} unreachable: "
                              f"{type(exc).__name__}") from None
        self._mark(True)
        if resp.status_code != 200:
            raise EngineError("error", f"OPA answered HTTP {resp.status_code}: "
                              f"{_opa_error(resp)}")
        try:
            doc = resp.json()
        except ValueError:
            raise EngineError("error", "OPA answered with a body that is not JSON") from None
        if not isinstance(doc, dict) or "result" not in doc:
            raise EngineError("error", "OPA has no data.magtape.main.decisions: are the MagTape "
                              "policy ConfigMaps (including the lib) loaded by kube-mgmt?")
        decisions = doc["result"]
        if not isinstance(decisions, dict):
            raise EngineError("error", "data.magtape.main.decisions is not an object")
        results = []
        errors = []
        for package, entry in sorted(decisions.items()):
            if not isinstance(entry, dict):
                continue
            try:
                info = parse_metadata(entry.get("metadata"), f"kubernetes.admission.{package}",
                                      "opa")
            except MetadataError as exc:
                raise EngineError("error", f"policy {package!r} in OPA: {exc}") from None
            violations, problem = read_deny(info, entry.get("deny"))
            results.append(PolicyResult(info.name, violations))
            if problem is not None:
                errors.append(PolicyError(info.name, info.errcode, info.severity, problem))
        return Evaluation(tuple(sorted(results, key=lambda r: r.policy)),
                          policy_errors=tuple(errors))

    def _mark(self, healthy: bool) -> None:
        with self._health_lock:
            self._healthy = healthy
            self._healthy_until = time.monotonic() + HEALTH_TTL_SECONDS
            if not healthy:
                self._written = not self._documents

    def _write_documents(self, *, only_changed: bool = False) -> None:
        """PUT every document (``only_changed``: those OPA does not hold as they are)."""
        for path, value in self._documents.items():
            url = self._data_url + path
            try:
                if only_changed:
                    held = self._session.get(url, timeout=self._timeout)
                    if held.status_code == 200 and held.json().get("result") == value:
                        continue
                resp = self._session.put(url, data=json.dumps(value), timeout=self._timeout,
                                         headers={"Content-Type": "application/json"})
            except (requests.RequestException, ValueError) as exc:
                self._mark(False)
                raise EngineError("unavailable", f"cannot write data/{path} to OPA at "
                                  f"{self._data_url}: {type(exc).__name__}") from None
            if resp.status_code not in (200, 204):
                raise EngineError("error", f"OPA refused data/{path} (HTTP {resp.status_code}: "
                                  f"{_opa_error(resp)}); does a loaded policy use that "
                                  "package?")
        self._written = True

    @property
    def ready(self) -> bool:
        """OPA answered within the last few seconds (asked at most once per TTL)."""
        with self._health_lock:
            if time.monotonic() < self._healthy_until:
                return self._healthy
            # Claim the check so concurrent probes reuse the previous answer meanwhile.
            self._healthy_until = time.monotonic() + HEALTH_TTL_SECONDS
        try:
            ok = self._session.get(self._health, timeout=self._timeout).status_code == 200
        except requests.RequestException:
            ok = False
        if ok and self._documents:
            try:
                self._write_documents(only_changed=True)
            except EngineError as exc:
                log.warning("not ready: %s", exc)
                ok = False
        self._policies = self._count_policies() if ok else 0
        self._mark(ok)
        return ok

    @property
    def policies_loaded(self) -> int:
        """The policies OPA held at the last health check (0 while it is unreachable),
        checking again when that is older than the readiness TTL."""
        if not self.ready:
            return 0
        return self._policies

    def _count_policies(self) -> int:
        try:
            resp = self._session.post(self._query_url, json={"query": COUNT_QUERY},
                                      timeout=self._timeout)
            count = resp.json()["result"][0]["n"] if resp.status_code == 200 else None
        except (requests.RequestException, ValueError, LookupError, TypeError):
            count = None
        if not isinstance(count, int):
            log.warning("cannot count the policies OPA holds (HTTP query %s)", COUNT_QUERY)
            return 0
        return count


def _opa_error(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(doc.get("message", doc))[:200] if isinstance(doc, dict) else str(doc)[:200]
