"""The ``opa`` engine: an OPA sidecar queried over its REST Data API.

For clusters that already run OPA with kube-mgmt: kube-mgmt loads the same
policy ConfigMaps into OPA, and MagTape asks OPA for the gathering rule
``data.magtape.main.decisions`` (policies/lib/main.rego), which returns, per
applicable policy, its metadata and ``deny`` set. Policy loading is OPA's job,
so :meth:`OpaEngine.load` only records what it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

from magtape.engine import EngineError
from magtape.engine.policyset import MetadataError, parse_metadata, violations_from
from magtape.policy import Evaluation, LoadReport, PolicyModule, PolicyResult
from magtape.review import Review

DECISIONS_PATH = "/v1/data/magtape/main/decisions"


class OpaEngine:
    def __init__(self, base_url: str, timeout_seconds: float,
                 session: requests.Session | None = None) -> None:
        self._url = base_url.rstrip("/") + DECISIONS_PATH
        self._health = base_url.rstrip("/") + "/health"
        self._timeout = timeout_seconds
        self._session = session or requests.Session()
        self._report: LoadReport | None = None

    def evaluate(self, review: Review) -> Evaluation:
        body = '{"input":' + review.raw + "}"
        try:
            resp = self._session.post(self._url, data=body, timeout=self._timeout,
                                      headers={"Content-Type": "application/json"})
        except requests.RequestException as exc:
            raise EngineError(f"OPA at {self._url} unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise EngineError(f"OPA answered HTTP {resp.status_code}: {_opa_error(resp)}")
        try:
            doc = resp.json()
        except ValueError:
            raise EngineError("OPA answered with a body that is not JSON") from None
        if not isinstance(doc, dict) or "result" not in doc:
            raise EngineError("OPA has no data.magtape.main.decisions: are the MagTape "
                              "policy ConfigMaps (including the lib) loaded by kube-mgmt?")
        decisions = doc["result"]
        if not isinstance(decisions, dict):
            raise EngineError("data.magtape.main.decisions is not an object")
        results = []
        for package, entry in sorted(decisions.items()):
            if not isinstance(entry, dict):
                continue
            try:
                info = parse_metadata(entry.get("metadata"), f"kubernetes.admission.{package}",
                                      "opa")
            except MetadataError as exc:
                raise EngineError(f"policy {package!r} in OPA: {exc}") from None
            results.append(PolicyResult(info.name, violations_from(info, entry.get("deny"))))
        return Evaluation(tuple(sorted(results, key=lambda r: r.policy)))

    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        self._report = LoadReport(0, (), ())
        return self._report

    @property
    def ready(self) -> bool:
        try:
            return self._session.get(self._health, timeout=self._timeout).status_code == 200
        except requests.RequestException:
            return False

    @property
    def last_report(self) -> LoadReport | None:
        return self._report


def _opa_error(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(doc.get("message", doc))[:200] if isinstance(doc, dict) else str(doc)[:200]
