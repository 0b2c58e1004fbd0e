"""Shared fixtures: the built-in policy engine, apps built the way the server builds them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from magtape.admission import AdmissionService
from magtape.engine.embedded import EmbeddedEngine
from magtape.engine.sources import builtin_modules
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.review import make_review
from magtape.server import Webhook, start
from magtape.settings import Address, HttpSettings, Settings
from magtape.web import create_app

REPO = Path(__file__).resolve().parent.parent

# The shared fake Kubernetes API server (tests/fakekube.py) and its `fake_kube` fixture;
# real OPA (tests/opasupport.py) and its `opa_server` fixture.
pytest_plugins = ["fakekube", "opasupport"]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def builtin_engine() -> Iterator[EmbeddedEngine]:
    """One engine with the built-in policies, shared (it is read-only once loaded)."""
    engine = EmbeddedEngine(timeout_seconds=10, workers=4)
    report = engine.load(builtin_modules(), {})
    assert not report.errors, report.errors
    yield engine
    engine.close()


AppFactory = Callable[..., FlaskClient]


def admission_app(settings: Settings, engine: Any, notifier: Any, metrics: Metrics,
                  ready: Callable[[], bool] | None = None, enforcer: Any = None) -> Flask:
    """The admission app wired as ``server.start`` wires it: the service first, then the
    app around it; ``ready`` defaults to "the engine has a policy set"."""
    service = AdmissionService(settings, engine, notifier, metrics, enforcer=enforcer)
    return create_app(service, ready or (lambda: bool(engine.ready)), settings, metrics)


@pytest.fixture
def make_client(builtin_engine: EmbeddedEngine) -> AppFactory:
    """Build an isolated admission app: ``make_client(engine=..., deny_level=...)``.

    ``engine`` is the engine object; ``settings`` (default: the defaults) takes
    ``overrides`` as :meth:`Settings.with_overrides` does."""

    def factory(engine: Any = None, metrics: Metrics | None = None, notifier: Any = None,
                settings: Settings | None = None, **overrides: Any) -> FlaskClient:
        app = admission_app((settings or Settings()).with_overrides(**overrides),
                            engine or builtin_engine,
                            notifier or NullNotifier(), metrics or Metrics(CollectorRegistry()))
        return app.test_client()

    return factory


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path below ``root`` -> text) and return ``root``."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def load_objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def review_doc(obj: dict[str, Any], namespace: str = "test1",
               api_version: str = "admission.k8s.io/v1", **request: Any) -> dict[str, Any]:
    """The AdmissionReview the API server would send for ``obj``."""
    doc: dict[str, Any] = json.loads(make_review(obj, namespace).raw)
    doc["apiVersion"] = api_version
    doc["request"].update(request)
    return doc


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    """``magtape serve`` in this process on free loopback ports, default settings
    (a module may define its own ``hook`` with other settings)."""
    free = Address("127.0.0.1", 0)
    webhook = start(Settings(http=HttpSettings(listen=free, metrics_listen=free)))
    yield webhook
    webhook.stop(flush_seconds=1)
