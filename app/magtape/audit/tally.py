"""The audit's findings as bounded metric samples.

``magtape_audit_violations{namespace, policy, severity}`` counts fail and
warn results (what admission would report now, exemptions left out);
``magtape_audit_would_deny_objects{namespace, level}`` counts objects that
would be denied were ``MAGTAPE_DENY_LEVEL`` that level. Label values are
bounded whatever the cluster holds: the namespaces with the most findings
keep their name up to ``max_namespaces``, the rest are summed as ``other``;
likewise policies (a custom policy set can be large).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from magtape.audit.results import FAIL, WARN, ObjectAudit
from magtape.namespaces import OTHER
from magtape.policy import DenyLevel

MAX_NAMESPACES = 200
MAX_POLICIES = 100


def _keep(counts: Counter[str], limit: int) -> set[str]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name for name, _ in ranked[:limit]}


def tally(audits: Iterable[ObjectAudit], max_namespaces: int = MAX_NAMESPACES,
          max_policies: int = MAX_POLICIES
          ) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
    audits = list(audits)
    per_ns: Counter[str] = Counter()
    per_policy: Counter[str] = Counter()
    for a in audits:
        for r in a.results:
            if r.result in (FAIL, WARN):
                per_ns[a.ref.namespace] += 1
                per_policy[r.policy] += 1
        per_ns[a.ref.namespace] += len(a.denied_at)
    namespaces = _keep(per_ns, max_namespaces)
    policies = _keep(per_policy, max_policies)
    violations: Counter[tuple[str, str, str]] = Counter()
    would_deny: Counter[tuple[str, str]] = Counter()
    for a in audits:
        ns = a.ref.namespace if a.ref.namespace in namespaces else OTHER
        for r in a.results:
            if r.result in (FAIL, WARN):
                policy = r.policy if r.policy in policies else OTHER
                violations[(ns, policy, r.severity)] += 1
        for level in a.denied_at:
            would_deny[(ns, level.value)] += 1
    # Every level is exported for every namespace with findings, at 0 when
    # nothing would be denied there, so the dashboard can compare levels.
    for ns in {k[0] for k in violations} | {k[0] for k in would_deny}:
        for level in DenyLevel:
            would_deny.setdefault((ns, level.value), 0)
    return dict(violations), dict(would_deny)
