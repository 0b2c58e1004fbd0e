"""What a ``magtape check`` run found: the one structure every output format renders.

Kept apart from the evaluation (``magtape.check``) and from the formats
(``magtape.report.*``) so a new format needs no knowledge of the engine and
the evaluation no knowledge of formats.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from magtape.check.manifests import Manifest
from magtape.policy import DenyLevel, PolicyInfo, Violation
from magtape.remediation import Catalogue, Remedy


class ObjectVerdict(enum.Enum):
    """Per object; the value is what the text report prints."""

    PASS = "PASS"
    WARN = "WARN"  # failures below the deny level: admitted with warnings
    DENIED = "DENIED"
    SKIP = "SKIP"  # no policy targets the object's kind
    EXEMPT = "EXEMPT"  # every failure was exempted
    ERROR = "ERROR"  # a policy failed at runtime on this object


@dataclass(frozen=True)
class CheckFinding:
    """One failed check on one object."""

    violation: Violation
    denies: bool
    remedy: Remedy | None
    exemption: str = ""  # why it is exempted; "" when it is not
    # why a failure that would deny did not: existing before the UPDATE, inherited from
    # its owner, scheduled (the webhook's note); "" otherwise
    note: str = ""


@dataclass(frozen=True)
class ObjectResult:
    manifest: Manifest
    namespace: str  # "" for cluster-scoped objects
    verdict: ObjectVerdict
    checks: tuple[PolicyInfo, ...]  # the policies that target the object's kind
    findings: tuple[CheckFinding, ...] = ()  # in the engine's (message) order, exempted included
    errors: tuple[str, ...] = ()  # why it could not be (fully) checked
    # The policies that failed at runtime; empty with errors: the whole object failed.
    failed_policies: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``Kind namespace/name``, or ``Kind name`` for a cluster-scoped object."""
        who = f"{self.namespace}/{self.manifest.name}" if self.namespace else self.manifest.name
        return f"{self.manifest.kind} {who}"

    @property
    def active(self) -> tuple[CheckFinding, ...]:
        """Findings that count (not exempted)."""
        return tuple(f for f in self.findings if not f.exemption)


@dataclass(frozen=True)
class CheckRun:
    objects: tuple[ObjectResult, ...]
    policies: tuple[PolicyInfo, ...]
    deny_level: DenyLevel
    catalogue: Catalogue
    skipped_documents: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    # Each object's part of the report, by format, where it was rendered beside
    # the evaluation (``check -j N``; magtape.report.parts).
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def count(self, verdict: ObjectVerdict) -> int:
        return sum(o.verdict is verdict for o in self.objects)

    @property
    def counts(self) -> dict[str, int]:
        """Objects per verdict, plus the non-Kubernetes documents left out."""
        v = ObjectVerdict
        return {"objects": len(self.objects), "passed": self.count(v.PASS),
                "warned": self.count(v.WARN), "denied": self.count(v.DENIED),
                "skipped": self.count(v.SKIP), "exempted": self.count(v.EXEMPT),
                "errors": self.count(v.ERROR),
                "nonKubernetesDocuments": sum(self.skipped_documents.values())}

    def parts_of(self, fmt: str, render: Callable[[CheckRun], list[str]]) -> Sequence[str]:
        """Each object's part of the ``fmt`` report: as rendered already, or by ``render``."""
        rendered = self.parts.get(fmt)
        return rendered if rendered is not None else render(self)

    def remedy(self, policy: PolicyInfo) -> Remedy | None:
        return self.catalogue.get(policy.errcode) or self.catalogue.get(policy.name)
