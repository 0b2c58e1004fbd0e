"""``magtape audit``: the background audit's evaluation, once, from a workstation.

Reads the cluster with the kubeconfig's identity: the audited kinds, the
namespaces (their labels are policy data and decide the opt-in scope), the
MagTapeExceptions and the overrides ConfigMap, and the policy ConfigMaps
(policy discovery's; the built-in policies when there are none, or the
``--policies`` directories). Each object is decided by the same
:class:`~magtape.audit.results.Auditor` the in-cluster audit uses and the
namespace reports are built by the same function, so ``-o json`` prints the
PolicyReports the audit would write. Exit 1 when an object would be denied
at the deny level; 2 when the cluster or the policies cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

from magtape.audit import podsecurity as pod_security
from magtape.audit.kinds import KIND_OF, audit_kinds, owned_by_audited, owner_kinds, served
from magtape.audit.report import build_report
from magtape.audit.results import (
    FAIL,
    RUNNING_INHERITED,
    RUNNING_KEPT,
    RUNNING_RECREATE_DENIED,
    ObjectAudit,
    ObjectRef,
    ref_of,
)
from magtape.audit.service import options_for
from magtape.enforcement import EnforcementState, Enforcer, labels_from_data
from magtape.enforcement.inheritance import Inheritance, OwnersFrom
from magtape.enforcement.state import ConfigWatch, ExceptionWatch
from magtape.engine.sources import SourceError, base_data, policy_modules
from magtape.kube.discovery import format_errors, modules_of
from magtape.kube.objects import Obj, name, with_kind
from magtape.kube.replication import layout, replicated_kinds
from magtape.kube.rest import CONFIGMAPS, NAMESPACES, KubeError, RawApi
from magtape.namespaces import OPT_IN_LABEL, NamespaceDirectory
from magtape.policy import DenyLevel, PolicyModule
from magtape.remediation import remedies_for
from magtape.settings import ConfigError, Settings
from magtape.wiring.enforcement import EXCEPTIONS

EXIT_OK, EXIT_DENIED, EXIT_INPUT = 0, 1, 2
MIN_TIMEOUT_SECONDS = 30.0  # no admission deadline here
MAX_JOBS = 64
MAX_MESSAGE = 100  # table column


@dataclass(frozen=True)
class AuditCommandOptions:
    output: str = "table"  # table, json or html
    namespaces: tuple[str, ...] = ()  # only these (default: the audit's scope)
    all_namespaces: bool = False  # every namespace, opted in or not
    jobs: int = 1


class ClusterReadError(Exception):
    """Something the audit must read could not be read; says what and why."""


def run_audit(settings: Settings, options: AuditCommandOptions, out: TextIO, err: TextIO,
              api_client: Any = None) -> int:
    if api_client is None:
        from magtape.kube import client as kube_client

        api_client = kube_client.api_client()
    if api_client is None:
        print("magtape audit: no cluster found; set KUBECONFIG or run it where "
              "~/.kube/config points at the cluster", file=err)
        return EXIT_INPUT
    try:
        audits, level, outside, in_scope = _audit(settings, options, RawApi(api_client), err)
    except (ClusterReadError, ConfigError, SourceError) as exc:
        print(f"magtape audit: {exc}", file=err)
        return EXIT_INPUT
    by_ns: dict[str, list[ObjectAudit]] = {}
    for a in audits:
        by_ns.setdefault(a.ref.namespace, []).append(a)
    denied = sorted(a.ref for a in audits if level in a.denied_at)
    ps = settings.pod_security
    views = pod_security.summarize(in_scope, audits, ps.default)
    if options.output == "json":
        limits = options_for(settings).limits
        doc = {"denyLevel": level.value,
               "wouldDeny": [r.as_resource() for r in denied],
               "reports": [build_report(ns, found, limits) for ns, found in sorted(by_ns.items())],
               "optIn": [{"namespace": ns, "optedIn": False,
                          **{key: [r.as_resource() for r in refs]
                             for key, refs in preview.items()}}
                         for ns, preview in _opt_in_preview(audits, outside).items()],
               "podSecurity": {
                   "override": ps.override.document() if ps.override else None,
                   "default": ps.default.document() if ps.default else None,
                   "namespaces": [v.as_json() for v in views]}}
        out.write(json.dumps(doc, indent=2) + "\n")
    elif options.output == "html":
        from magtape.report.html import render_audit

        out.write(render_audit(audits, level, remedies_for(settings)))
    else:
        out.write(_table(audits, level))
        out.write(_preview_text(_opt_in_preview(audits, outside)))
        if ps.override or ps.default or any(v.level or v.psa or v.controls for v in views):
            out.write("\n" + pod_security.table(views, ps.override, ps.default))
    return EXIT_DENIED if denied else EXIT_OK


def _table(audits: list[ObjectAudit], level: DenyLevel) -> str:
    header = ("NAMESPACE", "OBJECT", "CHECK", "SEVERITY", "RESULT", "MESSAGE")
    rows = [header]
    for a in sorted(audits, key=lambda a: a.ref):
        for r in a.results:
            message = r.message if len(r.message) <= MAX_MESSAGE else r.message[:97] + "..."
            rows.append((a.ref.namespace, f"{a.ref.kind}/{a.ref.name}", r.check_id or r.policy,
                         r.severity, r.result, message))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
             .rstrip() for row in rows]
    results = sum(len(a.results) for a in audits)
    denied = sum(1 for a in audits if level in a.denied_at)
    lines.append("")
    lines.append(f"{len(audits)} objects audited, {results} results; {denied} would be denied "
                 f"at deny level {level.value}")
    return "\n".join(lines) + "\n"


# The opting-in preview (docs/audit.md, "Opting a namespace in"): for a namespace not
# opted in yet, which objects would be denied if created anew, and what that does to
# those already running.
PREVIEW_KEYS = {RUNNING_INHERITED: "inheritedByRunning",
                RUNNING_RECREATE_DENIED: "deniedIfRecreated", RUNNING_KEPT: "keptByUpdates"}


def _opt_in_preview(audits: list[ObjectAudit], outside: frozenset[str]
                    ) -> dict[str, dict[str, list[ObjectRef]]]:
    out: dict[str, dict[str, list[ObjectRef]]] = {}
    for a in sorted(audits, key=lambda a: a.ref):
        failing = [r for r in a.results if r.result == FAIL]
        if a.ref.namespace not in outside or not failing:
            continue
        preview = out.setdefault(a.ref.namespace, {k: [] for k in (
            "deniedIfNew", "inheritedByRunning", "deniedIfRecreated", "keptByUpdates")})
        preview["deniedIfNew"].append(a.ref)
        key = PREVIEW_KEYS.get(failing[0].running or RUNNING_KEPT, "keptByUpdates")
        preview[key].append(a.ref)
    return out


def _preview_text(previews: dict[str, dict[str, list[ObjectRef]]]) -> str:
    def names(refs: list[ObjectRef]) -> str:
        shown = ", ".join(f"{r.kind}/{r.name}" for r in refs[:5])
        return shown + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")

    lines = []
    for ns, p in sorted(previews.items()):
        lines.append("")
        lines.append(f"{ns} is not opted in. Once labelled {'='.join(OPT_IN_LABEL)}:")
        lines.append(f"  denied if created anew: {len(p['deniedIfNew'])} "
                     f"({names(p['deniedIfNew'])})")
        if p["inheritedByRunning"]:
            lines.append(f"  keep rolling out, their ReplicaSets, Pods and Jobs inherit these "
                         f"failures: {names(p['inheritedByRunning'])}")
        if p["deniedIfRecreated"]:
            lines.append(f"  run on, but denied if deleted or evicted and created again: "
                         f"{names(p['deniedIfRecreated'])}")
        if p["keptByUpdates"]:
            lines.append(f"  updates keep these failures: {names(p['keptByUpdates'])}")
    return "\n".join(lines) + "\n" if lines else ""


def _list(api: RawApi, ref: Any, namespace: str | None = None,
          selector: str | None = None, missing_ok: bool = False) -> list[Obj]:
    try:
        doc = api.list(ref, namespace, selector)
    except KubeError as exc:
        if missing_ok and exc.not_found:
            return []
        raise ClusterReadError(f"cannot list {ref}"
                               f"{' in ' + namespace if namespace else ''}: {exc}") from None
    items = list(doc.get("items") or [])
    with_kind(items, doc, ref.group_version)
    return items


def _data(settings: Settings, api: RawApi, namespaces: list[Obj]) -> dict[str, Any]:
    """``data`` as the webhook's replication lays it out (kube-mgmt's layout)."""
    data = base_data(settings)
    kubernetes: dict[str, Any] = dict(data.get("kubernetes") or {})
    for ref in replicated_kinds(settings.cluster.replicate_kinds):
        kubernetes[ref.plural] = layout(namespaces if ref == NAMESPACES else _list(api, ref))
    data["kubernetes"] = kubernetes
    return data


def _modules(settings: Settings, api: RawApi) -> list[PolicyModule]:
    if settings.engine.policy_dirs:
        return policy_modules(settings.engine.policy_dirs)
    configmaps = _list(api, CONFIGMAPS, settings.policy_namespace,
                       settings.cluster.policy_selector)
    if not configmaps:
        return policy_modules(())
    ordered = sorted(configmaps, key=lambda cm: str(cm["metadata"]["name"]))
    return [m for cm in ordered for m in modules_of(cm)]


def _enforcer(settings: Settings, api: RawApi, data: Mapping[str, Any],
              level: DenyLevel, inheritance: Inheritance) -> Enforcer:
    state = EnforcementState()
    ExceptionWatch(state, timedelta(days=settings.exceptions.max_days)).replace(
        _list(api, EXCEPTIONS, missing_ok=True))
    ConfigWatch(state, settings.exceptions.enforcement_configmap).replace(
        _list(api, CONFIGMAPS, settings.identity.namespace))

    def labels(namespace: str) -> Mapping[str, str] | None:
        return labels_from_data(data, namespace)

    return Enforcer(state, level, namespace_labels=labels, inheritance=inheritance)


def _audit(settings: Settings, options: AuditCommandOptions, api: RawApi, err: TextIO
           ) -> tuple[list[ObjectAudit], DenyLevel, frozenset[str], list[Obj]]:
    """The audits, the deny level, the audited namespaces that are not opted in, and the
    Namespace objects in the audit's scope."""
    from magtape.audit.results import Auditor
    from magtape.engine.embedded import EmbeddedEngine

    level = settings.deny_level
    jobs = max(1, min(options.jobs, MAX_JOBS))
    kinds = audit_kinds(settings.audit.kinds)
    namespaces = _list(api, NAMESPACES)
    directory = NamespaceDirectory()
    directory.replace(namespaces)
    scope = options_for(settings)
    data = _data(settings, api, namespaces)
    modules = _modules(settings, api)
    engine = EmbeddedEngine(max(settings.engine.timeout_seconds, MIN_TIMEOUT_SECONDS),
                            workers=jobs, memory_mb=settings.engine.memory_mb,
                            compiled=settings.engine.compiled)
    try:
        report = engine.load(modules, data)
        # The webhook's rule: a policy that fails to load is reported and skipped, the
        # others still decide. Only a set in which nothing loaded stops the audit.
        if report.errors and not report.policies:
            raise ClusterReadError(f"no policy loaded: {format_errors(report.errors)}")
        for error in report.errors:
            print(f"magtape audit: warning: skipping a policy that failed to load, as the "
                  f"webhook does: {format_errors((error,))}", file=err)
        names = {ref.plural: ref for ref in served(api, kinds, settings.identity.namespace)}
        audited = frozenset(KIND_OF.get(p, p) for p in names)
        listed = [obj for ref in names.values() for obj in _list(api, ref)]
        # Owners are found among what was listed, as the webhook finds them in its cache.
        enforcer = _enforcer(settings, api, data, level, Inheritance(
            frozenset(settings.exceptions.controller_identities), OwnersFrom(listed)))
        auditor = Auditor(enforcer, engine.evaluate,
                          remedies_for(settings),
                          owner_kinds(settings.exceptions.controller_owner_kinds))

        def in_scope(ns: str) -> bool:
            if options.namespaces:
                return ns in options.namespaces
            return scope.all_namespaces or options.all_namespaces or directory.opted_in(ns)

        objects = [obj for obj in listed
                   if (ns := ref_of(obj).namespace) and not owned_by_audited(obj, audited)
                   and in_scope(ns)]
        outside = frozenset(ns for obj in objects
                            if not directory.opted_in(ns := ref_of(obj).namespace))
        scoped = [n for n in namespaces if in_scope(name(n))]
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="audit") as pool:
            return list(pool.map(auditor.audit, objects)), level, outside, scoped
    finally:
        engine.close()
