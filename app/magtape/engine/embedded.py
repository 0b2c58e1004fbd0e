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

import functools
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from magtape.engine import EngineError, time_left
from magtape.engine.child import Frame, Op
from magtape.engine.policyset import (
    MetadataError,
    group_modules,
    package_of,
    parse_metadata,
    read_deny,
)
from magtape.engine.pool import START_TIMEOUT_SECONDS, PoolUnavailable, WorkerPool
from magtape.engine.sources import builtin_digests, source_digest
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
from magtape.settings import EngineSettings

log = logging.getLogger(__name__)

AGGREGATE_PACKAGE = "magtape_engine.aggregate"
COMPILED_PACKAGE = "magtape_engine.compiled"

# The engine's defaults are the settings' (one place: magtape.settings.EngineSettings).
DEFAULTS = EngineSettings()
KEEP_SETS = 8


@dataclass(frozen=True)
class _Active:
    version: int
    infos: Mapping[str, PolicyInfo]  # by policy name
    kinds: frozenset[str]  # every kind some policy targets

    @functools.cached_property
    def passed(self) -> Mapping[str, PolicyResult]:
        """Each policy's passing result, built once: most results of a request are these."""
        return {name: PolicyResult(name, ()) for name in self.infos}


def _gather(rule: str, policies: Sequence[Vetted], names: Mapping[str, str]) -> list[str]:
    """``rule[name]`` is ``[deny]`` when the policy applies and ``[]`` when its
    ``matches`` is not true; one entry per line (regorus limits line length)."""
    lines = [f"{rule} := {{"]
    for v in policies:
        ref = f"data.{v.group.package}"
        lines.append(f"\t{json.dumps(names[v.group.package])}: "
                     f"[d | {ref}.matches == true; d := {ref}.deny],")
    return [*lines, "}"]


def _aggregate_modules(by_kind: Mapping[str, list[Vetted]], names: Mapping[str, str],
                       proven: frozenset[str]) -> tuple[list[PolicyModule], dict[str, Any]]:
    """The generated modules and the workers' plan (kind -> rules and policies).

    ``aggregate.kind_N`` gathers every policy targeting the kind, for the
    interpreter. When some of them are ``proven`` (packages made only of
    built-in modules, which tests/test_differential.py checks against OPA in
    regorus' compiled mode), ``compiled.kind_N`` gathers those for that mode
    and ``aggregate.kind_N_rest`` the others for the interpreter.
    """
    header = ["", "import rego.v1", ""]
    main = [f"package {AGGREGATE_PACKAGE}", *header]
    fast = [f"package {COMPILED_PACKAGE}", *header]
    plan: dict[str, Any] = {}
    for i, (kind, policies) in enumerate(sorted(by_kind.items())):
        rule = f"kind_{i}"
        main += _gather(rule, policies, names)
        entry: dict[str, Any] = {
            "rule": f"data.{AGGREGATE_PACKAGE}.{rule}",
            "policies": [[names[v.group.package], v.group.package] for v in policies]}
        sure = [v for v in policies if v.group.package in proven]
        rest = [v for v in policies if v.group.package not in proven]
        if sure:
            fast += _gather(rule, sure, names)
            entry["compiled"] = f"data.{COMPILED_PACKAGE}.{rule}"
            if rest:
                main += _gather(f"{rule}_rest", rest, names)
                entry["rest"] = f"data.{AGGREGATE_PACKAGE}.{rule}_rest"
        plan[kind] = entry
    modules = [PolicyModule("magtape-engine", "magtape_engine_aggregate.rego",
                            "\n".join(main) + "\n")]
    if proven:
        modules.append(PolicyModule("magtape-engine", "magtape_engine_compiled.rego",
                                    "\n".join(fast) + "\n"))
    return modules, plan


def _proven(libraries: Sequence[PolicyModule], policies: Sequence[Vetted]
            ) -> tuple[frozenset[str], list[PolicyModule]]:
    """The policy packages regorus' compiled mode may evaluate, and the modules it
    compiles for them (those packages' and the built-in libraries').

    A package is proven when every module of it is a built-in one, and no other
    module shares a package with them or with the built-in libraries they
    import (it would change what they mean).
    """
    digests = builtin_digests()
    proven = {v.group.package for v in policies
              if all(source_digest(m.source) in digests for m in v.group.modules)}
    if not proven:
        return frozenset(), []
    trusted, modules = set(proven), [m for v in policies if v.group.package in proven
                                     for m in v.group.modules]
    others: set[str] = {v.group.package for v in policies} - proven
    for m in libraries:
        package = package_of(m.source) or ""
        if source_digest(m.source) in digests:
            trusted.add(package)
            modules.append(m)
        else:
            others.add(package)
    for other in others:
        for package in trusted:
            if other == package or other.startswith(package + ".") \
                    or package.startswith(other + "."):
                return frozenset(), []
    return frozenset(proven), modules


class EmbeddedEngine:
    """Evaluator and PolicyLoader over regorus worker processes; thread-safe."""

    def __init__(self, timeout_seconds: float = DEFAULTS.timeout_seconds,
                 workers: int = DEFAULTS.workers, memory_mb: int = DEFAULTS.memory_mb,
                 vet_timeout_seconds: float | None = None, compiled: bool = True,
                 trust_builtins: bool = True) -> None:
        self._timeout = timeout_seconds
        self._compiled = compiled  # regorus' compiled mode for the proven built-ins
        self._memory_mb = memory_mb
        # Vetting runs each policy once on a minimal object; one that needs
        # longer than this cannot be afforded on every request either.
        self._vet_timeout = vet_timeout_seconds or max(2 * timeout_seconds, 5.0)
        # False: vet the built-in policies too, as hack/vet_builtins.py does to record them.
        self._trust_builtins = trust_builtins
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
        vetter = self._vetter = Vetter(self._vet_timeout, self._memory_mb, self._trust_builtins)
        try:
            return self._vet_and_swap(vetter, modules, data)
        finally:
            vetter.close()
            self._vetter = None

    def _vet_and_swap(self, vetter: Vetter, modules: Sequence[PolicyModule],
                      data: Mapping[str, Any]) -> LoadReport:
        vetted = vetter.vet(group_modules(modules, builtin_digests()))
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
        policies = [v for v, _ in kept]
        proven, compiled = (_proven(vetted.libraries, policies) if self._compiled
                            else (frozenset(), []))
        generated, plan = _aggregate_modules(
            by_kind, {v.group.package: info.name for v, info in kept}, proven)
        sources = [*vetted.libraries, *generated, *(m for v in policies for m in v.group.modules)]
        # What regorus compiles for its compiled mode: those modules and the
        # generated rules over the proven policies (the last generated module).
        in_program = {id(m) for m in compiled} | ({id(generated[-1])} if proven else set())
        program = [i for i, m in enumerate(sources) if id(m) in in_program]
        version = self._version + 1
        pairs = module_pairs(sources)
        problem = None if vetted.prevetted else vetter.check_set(pairs, plan, program)
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
        policy_frame = json.dumps({"modules": pairs, "plan": plan, "program": program,
                                   "version": version}).encode()
        self._pool.broadcast(policy=Frame(Op.LOAD, policy_frame),
                             data=Frame(Op.DATA, json.dumps(data).encode()))
        # Start-up: return once a worker serves the set, so ready follows load.
        if not self._pool.wait_alive(START_TIMEOUT_SECONDS):
            log.error("no engine worker started within %gs; see the errors above",
                      START_TIMEOUT_SECONDS)
        self._version = version
        self._active = new_set
        return LoadReport(self._version, tuple(info for _, info in kept), tuple(errors))

    def update_data(self, data: Mapping[str, Any]) -> None:
        self._pool.broadcast(data=Frame(Op.DATA, json.dumps(data).encode()))

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (the admission listener lends its workers to requests)."""
        return self._pool

    @property
    def ready(self) -> bool:
        return self._active is not None and self._pool.alive > 0

    def not_ready_reasons(self) -> list[str]:
        """Why :attr:`ready` is false, one sentence each (for /readyz)."""
        reasons = []
        if self._active is None:
            reasons.append("no policies loaded: the engine has no active policy set yet")
        if self._pool.alive == 0:
            reasons.append("no engine worker: every policy engine worker process is down or "
                           "still starting (see the log)")
        return reasons

    # ---------------------------------------------------------- evaluation
    def evaluate(self, review: Review) -> Evaluation:
        active = self._active
        if active is None:
            raise EngineError("unavailable", "no policy set is loaded yet")
        if review.kind not in active.kinds:  # no policy targets it: no round trip
            return Evaluation((), active.version)
        left = time_left(self._timeout)
        try:
            frame = self._pool.call(Op.EVALUATE, review.kind.encode() + b"\n" + review.raw.encode(),
                                    timeout=left)
        except PoolUnavailable as exc:
            detail = exc.detail
            if exc.reason == "timeout":
                detail = f"policy evaluation timed out after {self._timeout:g}s ({detail})"
            raise EngineError(exc.reason, detail) from None
        if frame.op not in (Op.ALLOWED, Op.COMPILED, Op.FINDINGS):
            raise EngineError("error", frame.payload.decode(errors="replace"))
        version_text, _, body = frame.payload.partition(b"\n")
        policy_set = self._sets.get(int(version_text), active)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # e.g. an integer beyond 64 bits: a defect
            raise EngineError("error", f"the engine worker's answer is unreadable: {exc}") from None
        if frame.op == Op.FINDINGS:
            deny, failed = doc["deny"], doc["errors"]
        else:
            deny = {name: value[0] for name, value in doc.items() if value}
            failed = {}
        return self._evaluation(policy_set, deny, failed, frame.op == Op.COMPILED)

    @staticmethod
    def _evaluation(policy_set: _Active, deny: Mapping[str, Any],
                    failed: Mapping[str, str], compiled: bool = False) -> Evaluation:
        results: list[PolicyResult] = []
        errors: list[PolicyError] = []
        infos, passed = policy_set.infos, policy_set.passed  # read once, not per policy
        for name in sorted({*deny, *failed} if failed else deny):
            info = infos.get(name)
            if info is None:  # not a policy of that set: a defect, never a verdict
                continue
            if name in failed:
                errors.append(PolicyError(name, info.errcode, info.severity, failed[name]))
                continue
            value = deny[name]
            if value == []:  # the common case: the policy passed
                results.append(passed[name])
                continue
            violations, problem = read_deny(info, value)
            results.append(PolicyResult(name, violations))
            if problem is not None:
                errors.append(PolicyError(name, info.errcode, info.severity, problem))
        return Evaluation(tuple(results), policy_set.version, tuple(errors), compiled)

    def close(self) -> None:
        """End every worker process now (and a vetting child, if a load runs)."""
        vetter = self._vetter
        if vetter is not None:
            vetter.close()
        self._pool.close()
