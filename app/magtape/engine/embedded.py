"""The embedded policy engine: regopy (rego-cpp) in-process.

One bundle is built per policy-set version (policies, shared library, data,
and a generated rule per kind gathering the ``deny`` sets of the policies
whose metadata targets that kind); each request sets the input once per
worker thread and queries its kind's rule once.
Loading is vetted (see :mod:`magtape.engine.vet`), fully compiled, then
swapped in with one reference assignment, so requests in flight finish on the
set they started with. Evaluation runs on a bounded worker pool so a stuck
evaluation turns into a timeout, not a hung admission request.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from regopy import Bundle, RegoError

from magtape.engine import EngineError
from magtape.engine.policyset import (
    MetadataError,
    group_modules,
    parse_metadata,
    violations_from,
)
from magtape.engine.rego import (
    Evaluator,
    RegoQueryError,
    compile_bundle,
    entrypoint,
    locate_error,
)
from magtape.engine.vet import vet
from magtape.policy import (
    Evaluation,
    LoadReport,
    PolicyInfo,
    PolicyLoadError,
    PolicyModule,
    PolicyResult,
)
from magtape.review import Review

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Policy:
    info: PolicyInfo
    deny_entrypoint: str


@dataclass(frozen=True)
class _KindPlan:
    """What to query for one request kind: one aggregate entrypoint, and the
    per-policy entrypoints used only to pin a runtime error on its policy."""

    entrypoint: str
    policies: tuple[_Policy, ...]


@dataclass(frozen=True)
class _PolicySet:
    version: int
    bundle: Bundle
    by_kind: Mapping[str, _KindPlan]


# Generated module: for each kind, one rule gathering the `deny` sets of the
# policies that target it. One query per request instead of one per policy
# saves rego-cpp's fixed per-query cost and lets shared library rules (the pod
# spec, the container lists) be evaluated once per request.
AGGREGATE_PACKAGE = "magtape_engine.aggregate"


def _aggregate_module(by_kind: Mapping[str, list[_Policy]]) -> tuple[PolicyModule, dict[str, str]]:
    lines = [f"package {AGGREGATE_PACKAGE}", ""]
    rule_of: dict[str, str] = {}
    for i, (kind, policies) in enumerate(sorted(by_kind.items())):
        rule = f"kind_{i}"
        rule_of[kind] = entrypoint(AGGREGATE_PACKAGE, rule)
        entries = ", ".join(f"{json.dumps(p.info.name)}: data.{p.info.package}.deny"
                            for p in policies)
        lines.append(f"{rule} := {{{entries}}}")
    return PolicyModule("magtape-engine", "magtape_engine_aggregate.rego",
                        "\n".join(lines) + "\n"), rule_of


class EmbeddedEngine:
    """PolicyEngine over regopy; thread-safe."""

    def __init__(self, timeout_seconds: float = 3.0, workers: int = 8) -> None:
        self._timeout = timeout_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rego")
        self._local = threading.local()
        self._load_lock = threading.Lock()
        self._active: _PolicySet | None = None
        self._report: LoadReport | None = None
        self._version = 0

    # ------------------------------------------------------------ loading
    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        with self._load_lock:
            vetted = vet(group_modules(modules))
            errors = list(vetted.errors)
            policies: list[_Policy] = []
            names: dict[str, PolicyInfo] = {}
            for group, raw_meta in vetted.policies:
                try:
                    info = parse_metadata(raw_meta, group.package, group.origin)
                except MetadataError as exc:
                    errors.append(PolicyLoadError(group.origin, group.modules[0].filename,
                                                  str(exc), policy=group.package))
                    continue
                if info.name in names:
                    errors.append(PolicyLoadError(
                        group.origin, group.modules[0].filename,
                        f"policy name {info.name!r} is already used by {names[info.name].origin}",
                        policy=group.package))
                    continue
                names[info.name] = info
                policies.append(_Policy(info, entrypoint(group.package, "deny")))
            kept = {p.info.package for p in policies}
            by_kind: dict[str, list[_Policy]] = {}
            for p in sorted(policies, key=lambda p: p.info.name):
                for kind in p.info.targets:
                    by_kind.setdefault(kind, []).append(p)
            aggregate, rule_of = _aggregate_module(by_kind)
            modules_in = [*vetted.libraries, aggregate,
                          *(m for g, _ in vetted.policies if g.package in kept for m in g.modules)]
            eps = [*rule_of.values(), *(p.deny_entrypoint for p in policies)]
            try:
                bundle = compile_bundle(modules_in, data, eps, query=None if eps else "true")
            except RegoError as exc:
                # Every part compiled on its own; the combination did not (for
                # example two ConfigMaps defining the same rule). Keep the old set.
                by_file = {m.filename: m for m in modules_in}
                failed = [PolicyLoadError(by_file[loc.filename].origin if loc.filename in by_file
                                          else "policy set", loc.filename, loc.message, loc.line)
                          for loc in locate_error(exc, {f: m.source for f, m in by_file.items()})]
                log.error("policy set not loaded, keeping the previous one: %s",
                          "; ".join(map(str, failed)))
                self._report = LoadReport(self._version,
                                          self._report.policies if self._report else (),
                                          tuple(errors + failed))
                return self._report
            self._version += 1
            self._active = _PolicySet(
                self._version, bundle,
                {k: _KindPlan(rule_of[k], tuple(v)) for k, v in by_kind.items()})
            report = LoadReport(self._version, tuple(p.info for p in policies), tuple(errors))
            self._report = report
        for err in report.errors:
            log.error("policy not loaded: %s", err)
        log.info("policy set v%d active: %d policies, %d errors", report.version,
                 len(report.policies), len(report.errors))
        return report

    @property
    def ready(self) -> bool:
        return self._active is not None

    @property
    def last_report(self) -> LoadReport | None:
        return self._report

    # ---------------------------------------------------------- evaluation
    def evaluate(self, review: Review) -> Evaluation:
        active = self._active
        if active is None:
            raise EngineError("no policy set is loaded yet")
        plan = active.by_kind.get(review.kind)
        if plan is None:
            return Evaluation((), active.version)
        future = self._pool.submit(self._evaluate, active, plan, review.raw)
        try:
            results = future.result(timeout=self._timeout)
        except FutureTimeout:
            future.cancel()
            raise EngineError(f"policy evaluation timed out after {self._timeout:g}s") from None
        return Evaluation(results, active.version)

    def _evaluate(self, active: _PolicySet, plan: _KindPlan,
                  raw: str) -> tuple[PolicyResult, ...]:
        evaluator: Evaluator | None = getattr(self._local, "evaluator", None)
        if evaluator is None:
            evaluator = self._local.evaluator = Evaluator()
        try:
            evaluator.set_input(raw)
        except RegoError as exc:
            raise EngineError(f"the engine rejected the request as input: {exc}") from None
        try:
            denies = evaluator.query(active.bundle, plan.entrypoint)
        except RegoQueryError:
            denies = None
        if not isinstance(denies, dict):
            # Slow path: find the policy that failed, so the error names it.
            denies = {}
            for policy in plan.policies:
                try:
                    denies[policy.info.name] = evaluator.query(active.bundle,
                                                               policy.deny_entrypoint)
                except RegoQueryError as exc:
                    raise EngineError(f"policy {policy.info.name!r} failed: {exc}") from None
        return tuple(PolicyResult(p.info.name, violations_from(p.info, denies.get(p.info.name)))
                     for p in plan.policies)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

