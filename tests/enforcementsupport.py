"""Workloads, exceptions and a settable clock shared by the exception/enforcement tests.

Workloads pass every built-in check except the ones a test switches on
(privileged containers: MT2001 HIGH; a missing memory limit: MT1003 LOW), so
each case states exactly what fails.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from conftest import admission_app
from magtape.metrics import Metrics
from magtape.notify import NullNotifier
from magtape.settings import Settings

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand (never sleeps)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def container(name: str, privileged: bool = False, limits: bool = True) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name, "image": "nginx",
        "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi"}},
    }
    if not limits:
        del c["resources"]["limits"]
    if privileged:
        c["securityContext"] = {"privileged": True}
    return c


def deployment(name: str = "web", *containers: dict[str, Any], namespace: str = "team-a",
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": list(containers or [container("app")])}}},
    }


def pod(name: str = "legacy", *containers: dict[str, Any], namespace: str = "team-a",
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Pod owned by a ReplicaSet (so MT1007 singleton-pod does not fire)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "rs", "uid": "u1", "controller": True}]},
        "spec": {"containers": list(containers or [container("app")])},
    }


def exception(name: str = "legacy-priv", *, checks: tuple[str, ...] = ("MT2001",),
              namespace: str = "team-a", expires: datetime | None = None,
              created: datetime | None = NOW, **match: Any) -> dict[str, Any]:
    """A MagTapeException object; ``match`` gives spec.match (default: names [legacy-*])."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    spec: dict[str, Any] = {
        "checks": list(checks),
        "match": match or {"names": ["legacy-*"]},
        "expiresAt": (expires or NOW + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": "vendor agent needs the host's devices until the 2.0 upgrade",
        "owner": "team-a@example.com",
        "ticket": "OPS-1234",
    }
    return {"apiVersion": "magtape.k8s.t-mobile.com/v1alpha1", "kind": "MagTapeException",
            "metadata": meta, "spec": spec}


def with_finalizers(obj: dict[str, Any], *finalizers: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["finalizers"] = list(finalizers)
    return out


def client_for(engine: Any, enforcer: Any, metrics: Any = None, notifier: Any = None,
               **settings: Any) -> FlaskClient:
    """An admission app as the server builds it, with this enforcer."""
    app = admission_app(Settings().with_overrides(deny_level=enforcer.default_level, **settings),
                     engine, notifier or NullNotifier(), metrics or Metrics(CollectorRegistry()),
                     enforcer=enforcer)
    return app.test_client()
