"""Every policy sample and every testing/ manifest, through the real webhook.

Each sample under ``policies/*/samples/`` declares in a leading comment
``# expect: <IDs or none>`` the exact check IDs the built-in policies raise on
it; each manifest under ``testing/`` is listed in ``testing/functional-tests.yaml``
with its IDs and whether deny level LOW denies it. Both are wrapped in the
AdmissionReview the API server would send and posted to the admission app
(real engine, real policies) at every deny level; the expected ``allowed`` flag
follows from the IDs' severities and the deny table, never from text.

Namespace objects in a sample's file (or testing/namespaces/) become
``data.kubernetes.namespaces``, as kube-mgmt would replicate them (MT2002).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from conftest import REPO, admission_app
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.policy import DenyLevel, Severity
from magtape.review import make_review
from magtape.settings import Settings

POLICIES = REPO / "policies"
TESTING = REPO / "testing"
PLAN = TESTING / "functional-tests.yaml"
DEFAULT_NAMESPACE = "test1"

EXPECT_RE = re.compile(r"^#\s*expect:\s*(.*?)\s*$")
MESSAGE_RE = re.compile(r"^\[FAIL\] (LOW|MED|HIGH) - (.+) \((MT\d{4})\)$")


@dataclass(frozen=True)
class Case:
    """One object to post, what it must raise, and the cluster data it needs."""

    id: str
    obj: dict[str, Any]
    namespaces: dict[str, Any]
    checks: frozenset[str]
    denied_at_low: bool | None = None  # stated by functional-tests.yaml only

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE)

    @property
    def data(self) -> dict[str, Any]:
        return {"kubernetes": {"namespaces": self.namespaces}} if self.namespaces else {}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _expected_ids(path: Path) -> frozenset[str]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = EXPECT_RE.match(line)
        if match:
            value = match.group(1)
            if value.lower() == "none":
                return frozenset()
            return frozenset(part.strip() for part in value.split(",") if part.strip())
    raise AssertionError(f"{path.relative_to(REPO)}: no leading '# expect: <IDs or none>' line")


def _split(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    namespaces = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Namespace"}
    others = [d for d in docs if d.get("kind") != "Namespace"]
    return others, namespaces


def sample_cases() -> Iterator[Case]:
    for path in sorted(POLICIES.glob("*/samples/*.yaml")):
        objects, namespaces = _split(_documents(path))
        assert len(objects) == 1, f"{path}: a sample holds one object (plus Namespaces)"
        yield Case(str(path.relative_to(POLICIES)), objects[0], namespaces, _expected_ids(path))


def functional_cases() -> Iterator[Case]:
    namespaces = {d["metadata"]["name"]: d
                  for f in sorted((TESTING / "namespaces").glob("*.yaml")) for d in _documents(f)}
    for entry in yaml.safe_load(PLAN.read_text(encoding="utf-8"))["tests"]:
        (obj,) = _documents(TESTING / entry["manifest"])
        yield Case(f"testing/{entry['manifest']}", obj, namespaces,
                   frozenset(entry["checks"]), bool(entry["denied_at_low"]))


CASES = [*sample_cases(), *functional_cases()]
LEVELS = [DenyLevel.OFF, DenyLevel.LOW, DenyLevel.MED, DenyLevel.HIGH]


class Webhooks:
    """Admission apps per (cluster data, deny level), sharing engines per data set."""

    def __init__(self) -> None:
        self._engines: dict[str, EmbeddedEngine] = {}
        self.severity_of: dict[str, Severity] = {}

    def engine(self, data: dict[str, Any]) -> EmbeddedEngine:
        key = json.dumps(data, sort_keys=True)
        if key not in self._engines:
            engine = EmbeddedEngine(timeout_seconds=10, workers=2)
            report = engine.load(builtin_modules(), data)
            assert not report.errors, report.errors
            self.severity_of = {p.errcode: p.severity for p in report.policies}
            self._engines[key] = engine
        return self._engines[key]

    def client(self, data: dict[str, Any], level: DenyLevel) -> FlaskClient:
        settings = Settings().with_overrides(deny_level=level)
        app = admission_app(settings, self.engine(data), NullNotifier(),
                         Metrics(CollectorRegistry()))
        return app.test_client()

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()
    yield hooks
    hooks.close()


def _post(webhooks: Webhooks, case: Case, level: DenyLevel) -> dict[str, Any]:
    review = json.loads(make_review(case.obj, case.namespace).raw)
    resp = webhooks.client(case.data, level).post("/", json=review)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["response"]["uid"] == review["request"]["uid"]
    return dict(body["response"])


def _ids(messages: list[str]) -> set[str]:
    return {m.rsplit("(", 1)[-1].rstrip(")") for m in messages}


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sample_raises_exactly_its_checks(webhooks: Webhooks, case: Case,
                                          level: DenyLevel) -> None:
    response = _post(webhooks, case, level)
    messages = response.get("warnings", [])
    assert _ids(messages) == set(case.checks), f"{case.id}: {messages}"

    unknown = case.checks - webhooks.severity_of.keys()
    assert not unknown, f"{case.id} expects unknown check IDs {sorted(unknown)}"
    denied = any(level.denies(webhooks.severity_of[c]) for c in case.checks)
    assert response["allowed"] is (not denied), f"{case.id} at {level.value}: {response}"
    if denied:
        # The denial names every failure, sorted and joined as the original did.
        assert response["status"]["message"] == ", ".join(sorted(messages))
    if case.denied_at_low is not None and level is DenyLevel.LOW:
        assert response["allowed"] is (not case.denied_at_low), \
            f"{case.id}: functional-tests.yaml says denied_at_low={case.denied_at_low}"


@pytest.mark.parametrize("case", [c for c in CASES if c.checks], ids=lambda c: c.id)
def test_messages_have_the_catalogue_shape(webhooks: Webhooks, case: Case) -> None:
    messages = _post(webhooks, case, DenyLevel.OFF).get("warnings", [])
    assert messages
    for message in messages:
        match = MESSAGE_RE.match(message)
        assert match, f"{case.id}: {message!r} is not '[FAIL] <SEV> - <text> (<ID>)'"
        severity, _, errcode = match.groups()
        assert Severity(severity) is webhooks.severity_of[errcode], \
            f"{case.id}: {message!r} states {severity}, policy {errcode} is " \
            f"{webhooks.severity_of[errcode].value}"


def test_every_testing_manifest_is_in_the_plan() -> None:
    listed = {e["manifest"] for e in yaml.safe_load(PLAN.read_text(encoding="utf-8"))["tests"]}
    present = {str(p.relative_to(TESTING)) for p in TESTING.rglob("*.yaml") if p != PLAN}
    assert present - listed == set(), "add these to testing/functional-tests.yaml"
    assert listed - present == set(), "functional-tests.yaml lists missing manifests"


def test_every_check_is_exercised_by_a_denied_sample_and_a_testing_manifest(
        webhooks: Webhooks) -> None:
    webhooks.engine({})
    catalogue = set(webhooks.severity_of)
    in_samples = {c for case in CASES if not case.id.startswith("testing/") for c in case.checks}
    in_testing = {c for case in CASES if case.id.startswith("testing/") for c in case.checks}
    assert catalogue - in_samples == set()
    assert catalogue - in_testing == set()


MANIFEST_FILES = [*sorted(POLICIES.glob("*/samples/*.yaml")),
                  *sorted(p for p in TESTING.rglob("*.yaml") if p != PLAN)]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_manifests_are_valid_kubernetes_objects(path: Path) -> None:
    # Samples are real manifests: the API server would accept every one of them.
    for doc in _documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
