"""Typed vocabulary shared by the engines, the decision logic and the reporters.

Everything that crosses a layer boundary (a violation, a policy's metadata, the
result of loading a policy set) is a frozen dataclass defined here, so the core
never passes raw Rego output around and decisions are made on typed
severities, never by matching message text.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.Enum):
    """Severity of a check, as written in ``policy_metadata.severity``."""

    LOW = "LOW"
    MED = "MED"
    HIGH = "HIGH"

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's __hash__ is Python code; a request hashes a severity per failure, measured).
    __hash__ = object.__hash__


class DenyLevel(enum.Enum):
    """``MAGTAPE_DENY_LEVEL``: which severities deny (see docs/policies.md).

    The level names the *lowest tolerance*: LOW denies only HIGH failures,
    HIGH denies everything. This mirrors the original MagTape.
    """

    OFF = "OFF"
    LOW = "LOW"
    MED = "MED"
    HIGH = "HIGH"

    __hash__ = object.__hash__  # as Severity's: in C (looked up per failure, measured)

    def denies(self, severity: Severity) -> bool:
        return severity in _DENY_TABLE[self]


_DENY_TABLE: dict[DenyLevel, frozenset[Severity]] = {
    DenyLevel.OFF: frozenset(),
    DenyLevel.LOW: frozenset({Severity.HIGH}),
    DenyLevel.MED: frozenset({Severity.HIGH, Severity.MED}),
    DenyLevel.HIGH: frozenset({Severity.HIGH, Severity.MED, Severity.LOW}),
}


@dataclass(frozen=True)
class PolicyInfo:
    """A loaded policy's ``policy_metadata`` plus where it came from."""

    name: str
    severity: Severity
    errcode: str
    targets: frozenset[str]
    package: str  # e.g. "kubernetes.admission.liveness_probe"
    origin: str  # file path or "configmap <ns>/<name>" it was loaded from


@dataclass(frozen=True, order=True)
class Violation:
    """One failed check for one request (one element of a policy's ``deny``)."""

    msg: str
    policy: str
    severity: Severity
    errcode: str
    details: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PolicyResult:
    """Outcome of one policy that applied to the request's kind."""

    policy: str
    violations: tuple[Violation, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class PolicyError:
    """A policy that applied to the request but gave no usable answer.

    It failed at run time (a builtin error, a conflict) or its ``deny`` held a
    malformed item (not an object, no string ``msg``, a severity other than
    the policy's own). The other policies of the request are unaffected.
    """

    policy: str
    errcode: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class Evaluation:
    """All policies that applied to one request, in policy-name order."""

    results: tuple[PolicyResult, ...]
    policy_set_version: int = 0
    policy_errors: tuple[PolicyError, ...] = ()
    # Decided by regorus' compiled mode (the built-in policies; docs/architecture.md)
    compiled: bool = False

    @functools.cached_property  # read several times per request (decision, metrics, notes)
    def violations(self) -> tuple[Violation, ...]:
        if len(self.results) == 1:  # already sorted by the engine
            return self.results[0].violations
        return tuple(sorted((v for r in self.results for v in r.violations),
                            key=lambda v: (v.msg, v.policy, v.errcode)))


@dataclass(frozen=True)
class PolicyModule:
    """One Rego source file, whatever it was read from.

    ``origin`` groups modules by where they came from (a file path, or
    ``configmap <namespace>/<name>``) so load errors can be reported back to
    that place; ``filename`` is what error messages and line numbers refer to.
    """

    origin: str
    filename: str
    source: str


@dataclass(frozen=True)
class PolicyLoadError:
    """Why a policy (or a module of it) was not loaded."""

    origin: str
    filename: str
    message: str
    line: int | None = None
    policy: str | None = None

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        who = f"policy {self.policy!r} " if self.policy else ""
        return f"{who}{where}: {self.message}"


@dataclass(frozen=True)
class LoadReport:
    """Result of compiling a policy set; the set is active once returned."""

    version: int
    policies: tuple[PolicyInfo, ...]
    errors: tuple[PolicyLoadError, ...]

    def errors_for(self, origin: str) -> tuple[PolicyLoadError, ...]:
        return tuple(e for e in self.errors if e.origin == origin)
