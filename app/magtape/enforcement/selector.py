"""Kubernetes label selectors (``matchLabels`` / ``matchExpressions``), parsed and matched.

Exceptions select objects and the enforcement overrides select namespaces
with the selector users already write in Deployments and webhooks; parsing
rejects what the API server would reject, with the path of the bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_TERMS = 32  # terms and values are bounded: a selector is configuration, not data


class SelectorError(ValueError):
    """A selector is malformed; the message names the field."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)


def parse_selector(doc: Any, where: str) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` document; SelectorError names ``where``."""
    if doc is None:
        return LabelSelector()
    if not isinstance(doc, dict):
        raise SelectorError(f"{where} must be an object with matchLabels/matchExpressions")
    unknown = set(doc) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SelectorError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}; "
                            "accepted matchLabels and matchExpressions")
    reqs: list[Requirement] = []
    labels = doc.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise SelectorError(f"{where}.matchLabels must map label keys to string values")
    reqs.extend(Requirement(str(k), "In", frozenset({v})) for k, v in sorted(labels.items()))
    exprs = doc.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise SelectorError(f"{where}.matchExpressions must be a list")
    for i, expr in enumerate(exprs):
        path = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, dict) or not isinstance(expr.get("key"), str):
            raise SelectorError(f"{path} needs a string 'key'")
        op = expr.get("operator")
        if op not in OPERATORS:
            raise SelectorError(f"{path}.operator {op!r} is invalid: accepted "
                                + ", ".join(OPERATORS))
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"{path}.values must be a list of strings")
        if (op in ("In", "NotIn")) != bool(values):
            raise SelectorError(f"{path}: {op} needs "
                                + ("at least one value" if op in ("In", "NotIn") else "no values"))
        reqs.append(Requirement(expr["key"], op, frozenset(values)))
    if len(reqs) > MAX_TERMS or any(len(r.values) > MAX_TERMS for r in reqs):
        raise SelectorError(f"{where} has more than {MAX_TERMS} terms or values")
    return LabelSelector(tuple(reqs))
