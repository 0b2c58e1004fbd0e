"""Engine-agnostic rules for what makes a policy: packages and metadata.

A policy is every module sharing a package under ``kubernetes.admission.``;
every other package (``magtape.lib``, ``magtape.main``) is library code
compiled alongside each policy. ``policy_metadata`` is validated here, once,
into a typed :class:`~magtape.policy.PolicyInfo`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from magtape.engine.sources import source_digest
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
class Intruder:
    """A module declaring a package another origin (ConfigMap, file) owns."""

    module: PolicyModule
    package: str
    owner: str  # the owning origin


@dataclass(frozen=True)
class Grouped:
    libraries: tuple[PolicyModule, ...]
    policies: tuple[PolicyGroup, ...]
    unparsable: tuple[PolicyModule, ...]  # no package clause found
    intruders: tuple[Intruder, ...] = ()


def group_modules(modules: Sequence[PolicyModule],
                  shipped: Collection[str] = frozenset()) -> Grouped:
    """Modules by package. A package MagTape ships belongs to the origin (ConfigMap,
    file) holding the shipped module (``shipped``: digests of their text): Rego
    merges every module of a package, so a module elsewhere declaring it would
    rewrite it, and every policy using it. Such modules are left out as intruders,
    reported against their own origin. Other packages may span origins (a custom
    policy in several files)."""
    packages = [(m, package_of(m.source)) for m in modules]
    owners = _owners(packages, shipped)
    libs: list[PolicyModule] = []
    groups: dict[str, list[PolicyModule]] = {}
    bad: list[PolicyModule] = []
    intruders: list[Intruder] = []
    for m, pkg in packages:
        if pkg is None:
            bad.append(m)
        elif owners.get(pkg, m.origin) != m.origin:
            intruders.append(Intruder(m, pkg, owners[pkg]))
        elif pkg.startswith(POLICY_PREFIX):
            groups.setdefault(pkg, []).append(m)
        else:
            libs.append(m)
    return Grouped(
        libraries=tuple(libs),
        policies=tuple(PolicyGroup(p, tuple(ms)) for p, ms in sorted(groups.items())),
        unparsable=tuple(bad),
        intruders=tuple(intruders),
    )


def _owners(packages: Sequence[tuple[PolicyModule, str | None]],
            shipped: Collection[str]) -> dict[str, str]:
    """The origin of each shipped package: its shipped module's (the first, by name)."""
    owners: dict[str, str] = {}
    for m, pkg in sorted(packages, key=lambda p: p[0].origin) if shipped else ():
        if pkg is not None and pkg not in owners and source_digest(m.source) in shipped:
            owners[pkg] = m.origin
    return owners


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


# Severity.value is a Python-level descriptor; read once per policy answer (measured).
_SEVERITY_TEXT = {s: s.value for s in Severity}


def read_deny(info: PolicyInfo, value: Any) -> tuple[tuple[Violation, ...], str | None]:
    """Typed violations from a ``deny`` value, and what was wrong with it (if anything).

    Every item must be an object with a string ``msg``; ``severity`` and
    ``errcode``, when present, must be the policy's own (an item cannot raise
    or lower its policy's severity); ``details``, when present, an object.
    Well-formed items become violations even when others are malformed; the
    malformed ones are described in the returned message, never dropped
    silently nor trusted.
    """
    if value is None:
        return (), None
    if not isinstance(value, list):
        return (), f"deny must be a set of objects, got {_json_type(value)}"
    out: list[Violation] = []
    problems: list[str] = []
    name, severity, errcode = info.name, info.severity, info.errcode
    sev = _SEVERITY_TEXT[severity]
    for item in value:
        # The common case in one expression (thousands of items for a big object);
        # _item_problem says what is wrong otherwise.
        if (type(item) is dict and type(msg := item.get("msg")) is str
                and item.get("severity", sev) == sev and item.get("errcode", errcode) == errcode
                and ((details := item.get("details")) is None or type(details) is dict)):
            out.append(Violation(msg, name, severity, errcode, details))
        else:
            problems.append(_item_problem(info, item) or "an item is malformed")
    error = None
    if problems:
        error = (f"{len(problems)} malformed deny item(s), e.g. {problems[0]}; each item must "
                 'be {"msg": <string>} with the policy\'s own severity and errcode')
    if len(out) > 1:  # most policies fail once per container: nothing to order
        out.sort(key=_violation_order)
    return tuple(out), error


def _violation_order(v: Violation) -> tuple[str, str, str]:
    return v.msg, v.policy, v.errcode


def _item_problem(info: PolicyInfo, item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"an item is {_json_type(item)}, not an object"
    if not isinstance(item.get("msg"), str):
        return f"an item's msg is {_json_type(item.get('msg'))}, not a string"
    if "severity" in item and item["severity"] != info.severity.value:
        return (f"an item claims severity {str(item['severity'])[:20]!r}, "
                f"but the policy's is {info.severity.value}")
    if "errcode" in item and item["errcode"] != info.errcode:
        return (f"an item claims errcode {str(item['errcode'])[:20]!r}, "
                f"but the policy's is {info.errcode}")
    if item.get("details") is not None and not isinstance(item["details"], dict):
        return f"an item's details is {_json_type(item['details'])}, not an object"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
