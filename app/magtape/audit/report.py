"""One PolicyReport per namespace, bounded, built the same way by the audit and the CLI.

The report (``wgpolicyk8s.io/v1alpha2``, read by Policy Reporter and other
tools) holds only fail, error, warn and skip (exempted) results; passes are
counted in ``summary.pass``. Kyverno's reports have filled etcd, so this one
is capped twice: at most ``max_results`` results and ``max_bytes`` of them.
What is left out is still counted in the summary, and the annotation
``magtape.k8s.t-mobile.com/omitted-results`` says how many results the cap
left out. The most important results are kept: fail before error before warn
before skip, then by severity, then by object. Content is deterministic (no
timestamps), so a report whose content did not change is never written again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from magtape.audit.results import ERROR, FAIL, SKIP, WARN, AuditResult, ObjectAudit
from magtape.kube.objects import Obj, metadata

API_VERSION = "wgpolicyk8s.io/v1alpha2"
KIND = "PolicyReport"
PLURAL = "policyreports"
REPORT_NAME = "magtape-audit"
SOURCE = "magtape"
MANAGED_BY = ("app.kubernetes.io/managed-by", "magtape")
OMITTED = "magtape.k8s.t-mobile.com/omitted-results"
TOTAL = "magtape.k8s.t-mobile.com/total-results"



@dataclass(frozen=True)
class ReportLimits:
    max_results: int = 500
    max_bytes: int = 512 * 1024  # of the results; etcd's limit per object is 1.5 MiB


def result_item(audit: ObjectAudit, r: AuditResult) -> Obj:
    """One ``results`` entry: check ID, severity, message, object, README link."""
    properties = {"checkId": r.check_id, "verdict": r.verdict}
    if r.note:
        properties["note"] = r.note
    if r.running:
        properties["running"] = r.running
    if r.url:
        properties["readme"] = r.url
    item: Obj = {"policy": r.policy, "rule": r.check_id or r.policy, "result": r.result,
                 "message": r.message, "source": SOURCE, "scored": True,
                 "resources": [audit.ref.as_resource()], "properties": properties}
    if r.severity:
        item["severity"] = r.severity
    return item


def build_report(namespace: str, audits: Iterable[ObjectAudit],
                 limits: ReportLimits = ReportLimits()) -> Obj:
    """The report for ``namespace`` (no resourceVersion: see :func:`content`)."""
    summary = {"pass": 0, FAIL: 0, WARN: 0, ERROR: 0, SKIP: 0}
    found: list[tuple[tuple[int, int], ObjectAudit, AuditResult]] = []
    for audit in audits:
        summary["pass"] += audit.passed
        for r in audit.results:
            summary[r.result] += 1
            found.append((r.rank, audit, r))
    found.sort(key=lambda t: (t[0], t[1].ref, t[2].policy, t[2].message))
    results: list[Obj] = []
    size = 1  # the results as compact JSON: "[" and "]", and a "," after all but the last
    for _, audit, r in found:
        if len(results) >= limits.max_results:
            break
        item = result_item(audit, r)
        item_size = len(json.dumps(item, separators=(",", ":"))) + 1
        if size + item_size > limits.max_bytes:
            break
        results.append(item)
        size += item_size
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": REPORT_NAME, "namespace": namespace,
                     "labels": {MANAGED_BY[0]: MANAGED_BY[1]},
                     "annotations": {OMITTED: str(len(found) - len(results)),
                                     TOTAL: str(len(found))}},
        "summary": summary, "results": results,
    }


def content(report: Mapping[str, Any]) -> Obj:
    """What decides whether a stored report must be rewritten."""
    meta = metadata(report)
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return {"labels": {MANAGED_BY[0]: labels.get(MANAGED_BY[0])},
            "annotations": {k: annotations.get(k) for k in (OMITTED, TOTAL)},
            "summary": report.get("summary") or {}, "results": report.get("results") or []}


def with_content(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj:
    """``existing`` (keeping others' labels and annotations) with ``desired``'s content."""
    out = dict(existing)
    meta = dict(existing.get("metadata") or {})
    want = desired["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **want["labels"]}
    meta["annotations"] = {**(meta.get("annotations") or {}), **want["annotations"]}
    out["metadata"] = meta
    out["summary"], out["results"] = desired["summary"], desired["results"]
    return out
