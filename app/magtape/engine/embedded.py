"""The embedded engine: regorus in a pool of supervised worker processes.

Loading vets the set (see :mod:`magtape.engine.vet`), builds a plan per kind
and a generated module with one rule per kind gathering the ``deny`` of every
policy that targets it (guarded by its ``matches``), checks the assembled set
once, then hands it to every worker (see :mod:`magtape.engine.pool`). A
request costs one pipe round trip and one rule evaluation; when that rule
fails, the worker asks each policy on its own so the failure is pinned on the
policy that caused it and the others are still decided. Cluster data travels
separately (:meth:`EmbeddedEngine.update_data`) and never recompiles policies.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from magtape.engine import EngineError
from magtape.engine.child import Frame
from magtape.engine.policyset import MetadataError, group_modules, parse_metadata, read_deny
from magtape.engine.pool import START_TIMEOUT_SECONDS, PoolUnavailable, WorkerPool
from magtape.engine.vet import Vetted, Vetter, module_pairs
from magtape.policy import (
    Evaluation,
    LoadReport,
    PolicyError,
    PolicyInfo,
    PolicyLoadError,
    PolicyModule,
    PolicyResult,
)
from magtape.review import Review

log = logging.getLogger(__name__)

AGGREGATE_PACKAGE = "magtape_engine.aggregate"

DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_WORKERS = 2
DEFAULT_MEMORY_MB = 192
KEEP_SETS = 8


@dataclass(frozen=True)
class _Active:
    version: int
    infos: Mapping[str, PolicyInfo]  # by policy name
    kinds: frozenset[str]  # every kind some policy targets


def _aggregate_module(by_kind: Mapping[str, list[Vetted]],
                      names: Mapping[str, str]) -> tuple[PolicyModule, dict[str, Any]]:
    """The generated module and the workers' plan (kind -> rule and policies).

    ``kind_N[name]`` is ``[deny]`` when the policy applies and ``[]`` when its
    ``matches`` is not true; one entry per line (regorus limits line length).
    """
    lines = [f"package {AGGREGATE_PACKAGE}", "", "import rego.v1", ""]
    plan: dict[str, Any] = {}
    for i, (kind, policies) in enumerate(sorted(by_kind.items())):
        rule = f"kind_{i}"
        lines.append(f"{rule} := {{")
        for v in policies:
            ref = f"data.{v.group.package}"
            lines.append(f"\t{json.dumps(names[v.group.package])}: "
                         f"[d | {ref}.matches == true; d := {ref}.deny],")
        lines.append("}")
        plan[kind] = {"rule": f"data.{AGGREGATE_PACKAGE}.{rule}",
                      "policies": [[names[v.group.package], v.group.package]
                                   for v in policies]}
    return PolicyModule("magtape-engine", "magtape_engine_aggregate.rego",
                        "\n".join(lines) + "\n"), plan


class EmbeddedEngine:
    """Evaluator and PolicyLoader over regorus worker processes; thread-safe."""

    def __init__(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 workers: int = DEFAULT_WORKERS, memory_mb: int = DEFAULT_MEMORY_MB,
                 vet_timeout_seconds: float | None = None) -> None:
        self._timeout = timeout_seconds
        self._memory_mb = memory_mb
        # Vetting runs each policy once on a minimal object; one that needs
        # longer than this cannot be afforded on every request either.
        self._vet_timeout = vet_timeout_seconds or max(2 * timeout_seconds, 5.0)
        self._pool = WorkerPool(workers, timeout_seconds, memory_mb)
        self._load_lock = threading.Lock()
        self._vetter: Vetter | None = None  # while a load runs: close() ends its child
        self._active: _Active | None = None
        # Recent sets by version: a worker may answer from a set just replaced.
        self._sets: dict[int, _Active] = {}
        self._version = 0

    # ------------------------------------------------------------ loading
    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        with self._load_lock:
            report = self._load(modules, data)
        for err in report.errors:
            log.error("policy not loaded: %s", err)
        log.info("policy set v%d active: %d policies, %d errors", report.version,
                 len(report.policies), len(report.errors))
        return report

    def _load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        vetter = self._vetter = Vetter(self._vet_timeout, self._memory_mb)
        try:
            return self._vet_and_swap(vetter, modules, data)
        finally:
            vetter.close()
            self._vetter = None

    def _vet_and_swap(self, vetter: Vetter, modules: Sequence[PolicyModule],
                      data: Mapping[str, Any]) -> LoadReport:
        vetted = vetter.vet(group_modules(modules))
        errors = list(vetted.errors)
        kept: list[tuple[Vetted, PolicyInfo]] = []
        names: dict[str, PolicyInfo] = {}
        for v in vetted.policies:
            group = v.group
            try:
                info = parse_metadata(v.metadata, group.package, group.origin)
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
            kept.append((v, info))
        by_kind: dict[str, list[Vetted]] = {}
        for v, info in sorted(kept, key=lambda pair: pair[1].name):
            for kind in sorted(info.targets):
                by_kind.setdefault(kind, []).append(v)
        aggregate, plan = _aggregate_module(
            by_kind, {v.group.package: info.name for v, info in kept})
        sources = [*vetted.libraries, aggregate, *(m for v, _ in kept for m in v.group.modules)]
        version = self._version + 1
        pairs = module_pairs(sources)
        problem = vetter.check_set(pairs, plan)
        if problem is not None:
            log.error("policy set not loaded, keeping the previous one: the policies "
                      "conflict when loaded together: %s", problem)
            failed = PolicyLoadError("policy set", "", "the policies conflict when loaded "
                                     f"together (the previous set stays active): {problem}")
            active = self._active
            return LoadReport(self._version,
                              tuple(active.infos.values()) if active else (),
                              (*errors, failed))
        new_set = _Active(version, names, frozenset(plan))
        # Known before any worker can answer from it.
        self._sets[version] = new_set
        for old in [v for v in self._sets if v <= version - KEEP_SETS]:
            del self._sets[old]
        policy_frame = json.dumps({"modules": pairs, "plan": plan, "version": version}).encode()
        self._pool.broadcast(policy=Frame(b"P", policy_frame),
                             data=Frame(b"D", json.dumps(data).encode()))
        # Start-up: return once a worker serves the set, so ready follows load.
        if not self._pool.wait_alive(START_TIMEOUT_SECONDS):
            log.error("no engine worker started within %gs; see the errors above",
                      START_TIMEOUT_SECONDS)
        self._version = version
        self._active = new_set
        return LoadReport(self._version, tuple(info for _, info in kept), tuple(errors))

    def update_data(self, data: Mapping[str, Any]) -> None:
        self._pool.broadcast(data=Frame(b"D", json.dumps(data).encode()))

    @property
    def ready(self) -> bool:
        return self._active is not None and self._pool.alive > 0

    # ---------------------------------------------------------- evaluation
    def evaluate(self, review: Review) -> Evaluation:
        active = self._active
        if active is None:
            raise EngineError("unavailable", "no policy set is loaded yet")
        if review.kind not in active.kinds:  # no policy targets it: no round trip
            return Evaluation((), active.version)
        try:
            frame = self._pool.call(b"I", review.kind.encode() + b"\n" + review.raw.encode())
        except PoolUnavailable as exc:
            detail = exc.detail
            if exc.reason == "timeout":
                detail = f"policy evaluation timed out after {self._timeout:g}s ({detail})"
            raise EngineError(exc.reason, detail) from None
        if frame.op not in (b"A", b"F"):
            raise EngineError("error", frame.payload.decode(errors="replace"))
        version_text, _, body = frame.payload.partition(b"\n")
        policy_set = self._sets.get(int(version_text), active)
        doc = json.loads(body)
        if frame.op == b"A":
            deny = {name: value[0] for name, value in doc.items() if value}
            failed: dict[str, str] = {}
        else:
            deny, failed = doc["deny"], doc["errors"]
        return self._evaluation(policy_set, deny, failed)

    @staticmethod
    def _evaluation(policy_set: _Active, deny: Mapping[str, Any],
                    failed: Mapping[str, str]) -> Evaluation:
        results: list[PolicyResult] = []
        errors: list[PolicyError] = []
        for name in sorted({*deny, *failed}):
            info = policy_set.infos.get(name)
            if info is None:  # not a policy of that set: a defect, never a verdict
                continue
            if name in failed:
                errors.append(PolicyError(name, info.errcode, info.severity, failed[name]))
                continue
            value = deny[name]
            if value == []:  # the common case: the policy passed
                results.append(PolicyResult(name, ()))
                continue
            violations, problem = read_deny(info, value)
            results.append(PolicyResult(name, violations))
            if problem is not None:
                errors.append(PolicyError(name, info.errcode, info.severity, problem))
        return Evaluation(tuple(results), policy_set.version, tuple(errors))

    def close(self) -> None:
        """End every worker process now (and a vetting child, if a load runs)."""
        vetter = self._vetter
        if vetter is not None:
            vetter.close()
        self._pool.close()
