"""Shared informers with timings short enough for tests (magtape.kube.informers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from fakekube import FakeKube
from magtape.engine import Evaluator
from magtape.kube.informers import Informers, WatchTimings
from magtape.kube.rest import RawApi
from magtape.metrics import Metrics
from magtape.runtime import Runtime, start
from magtape.settings import Settings

FAST = WatchTimings(watch_timeout_seconds=5, backoff_initial_seconds=0.05,
                    backoff_max_seconds=0.2)


def informers_for(kube: FakeKube, timings: WatchTimings = FAST) -> Informers:
    return Informers(RawApi(kube.api_client()), timings)


@contextmanager
def running_runtime(settings: Settings, engine: Evaluator, kube: FakeKube) -> Iterator[Runtime]:
    """magtape.runtime as the wiring starts it: handlers registered, then the informers."""
    informers = informers_for(kube)
    runtime = start(settings, engine, informers, Metrics(CollectorRegistry()))
    informers.start()
    try:
        yield runtime
    finally:
        informers.stop()
        runtime.stop()
