"""The ``opa`` engine: an OPA sidecar queried over its REST Data API.

For clusters that already run OPA with kube-mgmt: kube-mgmt loads the same
policy ConfigMaps into OPA, and MagTape asks OPA for the gathering rule
``data.magtape.main.decisions`` (policies/lib/main.rego), which returns, per
applicable policy, its metadata and ``deny`` set. Policy loading is OPA's job,
so this engine is only an :class:`~magtape.engine.Evaluator` and the server
builds no policy store for it. ``ready`` reflects the last contact with OPA
(a request or a health check at most every few seconds), so readiness probes
cost no network call each.
"""

from __future__ import annotations

import threading
import time

import requests

from magtape.engine import EngineError, Reason
from magtape.engine.policyset import MetadataError, parse_metadata, read_deny
from magtape.policy import Evaluation, PolicyError, PolicyResult
from magtape.review import Review

DECISIONS_PATH = "/v1/data/magtape/main/decisions"
# How long one contact with OPA vouches for readiness.
HEALTH_TTL_SECONDS = 5.0


class OpaEngine:
    def __init__(self, base_url: str, timeout_seconds: float,
                 session: requests.Session | None = None) -> None:
        self._url = base_url.rstrip("/") + DECISIONS_PATH
        self._health = base_url.rstrip("/") + "/health"
        self._timeout = timeout_seconds
        self._session = session or requests.Session()
        self._healthy_until = 0.0
        self._healthy = False
        self._health_lock = threading.Lock()

    def evaluate(self, review: Review) -> Evaluation:
        body = '{"input":' + review.raw + "}"
        try:
            resp = self._session.post(self._url, data=body, timeout=self._timeout,
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
        self._mark(ok)
        return ok


def _opa_error(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(doc.get("message", doc))[:200] if isinstance(doc, dict) else str(doc)[:200]
