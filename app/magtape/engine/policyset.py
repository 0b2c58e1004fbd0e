"""Engine-agnostic rules for what makes a policy: packages and metadata.

A policy is every module sharing a package under ``kubernetes.admission.``;
every other package (``magtape.lib``, ``magtape.main``) is library code
compiled alongside each policy. ``policy_metadata`` is validated here, once,
into a typed :class:`~magtape.policy.PolicyInfo`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from magtape.policy import PolicyInfo, PolicyModule, Severity, Violation

POLICY_PREFIX = "kubernetes.admission."

# The first `package` clause, after comments and blank lines.
_PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)


def package_of(source: str) -> str | None:
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _PACKAGE_RE.match(line)
        return m.group(1) if m else None
    return None


@dataclass(frozen=True)
class PolicyGroup:
    package: str
    modules: tuple[PolicyModule, ...]

    @property
    def origin(self) -> str:
        return self.modules[0].origin


@dataclass(frozen=True)
class Grouped:
    libraries: tuple[PolicyModule, ...]
    policies: tuple[PolicyGroup, ...]
    unparsable: tuple[PolicyModule, ...]  # no package clause found


def group_modules(modules: Sequence[PolicyModule]) -> Grouped:
    libs: list[PolicyModule] = []
    groups: dict[str, list[PolicyModule]] = {}
    bad: list[PolicyModule] = []
    for m in modules:
        pkg = package_of(m.source)
        if pkg is None:
            bad.append(m)
        elif pkg.startswith(POLICY_PREFIX):
            groups.setdefault(pkg, []).append(m)
        else:
            libs.append(m)
    return Grouped(
        libraries=tuple(libs),
        policies=tuple(PolicyGroup(p, tuple(ms)) for p, ms in sorted(groups.items())),
        unparsable=tuple(bad),
    )


class MetadataError(ValueError):
    pass


def parse_metadata(value: Any, package: str, origin: str) -> PolicyInfo:
    """Validate ``policy_metadata``; raise MetadataError saying what to fix."""
    if not isinstance(value, dict):
        raise MetadataError("policy_metadata is missing: define policy_metadata := "
                            '{"name": ..., "severity": "LOW"|"MED"|"HIGH", "errcode": ..., '
                            '"targets": {...}}')
    name, sev, errcode, targets = (value.get(k) for k in ("name", "severity", "errcode", "targets"))
    if not isinstance(name, str) or not name:
        raise MetadataError("policy_metadata.name must be a non-empty string")
    if sev not in {s.value for s in Severity}:
        raise MetadataError(f"policy_metadata.severity must be LOW, MED or HIGH, got {sev!r}")
    if not isinstance(errcode, str) or not errcode:
        raise MetadataError("policy_metadata.errcode must be a non-empty string")
    if (not isinstance(targets, list) or not targets
            or not all(isinstance(t, str) and t for t in targets)):
        raise MetadataError("policy_metadata.targets must be a non-empty set of kind names")
    return PolicyInfo(name=name, severity=Severity(sev), errcode=errcode,
                      targets=frozenset(targets), package=package, origin=origin)


def violations_from(info: PolicyInfo, value: Any) -> tuple[Violation, ...]:
    """Typed violations from a ``deny`` set, filling gaps from the metadata."""
    if not value:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):  # tolerate `deny contains msg` policies
            item = {"msg": item}
        if not isinstance(item, dict):
            continue
        sev = item.get("severity")
        severity = Severity(sev) if sev in Severity._value2member_map_ else info.severity
        details = item.get("details")
        out.append(Violation(
            msg=str(item.get("msg", "")),
            policy=info.name,
            severity=severity,
            errcode=str(item.get("errcode") or info.errcode),
            details=details if isinstance(details, dict) else None,
        ))
    return tuple(sorted(out))
