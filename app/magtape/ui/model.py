"""The page's in-memory view of the cluster, and the queries its views make of it.

Every piece is a reflector handler fed by a watch (``magtape.ui.command``):
PolicyReports (the audit's results), Namespaces (labels: the deny level's
selectors and the Pod Security level), MagTapeExceptions and the
enforcement ConfigMap (through the webhook's own
:class:`~magtape.enforcement.state.EnforcementState` handlers, so an
exception reads as the webhook reads it) and MagTape's Events
(:mod:`magtape.ui.history`). A page view only reads memory, never the API
server, so it answers while the API server is away; :class:`Health` says
when the watches last had contact, which the page shows as "stale".

Queries filter by namespace (exact), check ID and severity, and paginate;
the flat, sorted list of results is rebuilt only after a report changed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from magtape.enforcement.exceptions import Exemption
from magtape.enforcement.overrides import EnforcementConfig
from magtape.enforcement.state import ConfigWatch, EnforcementState, ExceptionWatch
from magtape.kube.objects import Obj, metadata
from magtape.namespaces import opted_in
from magtape.policy import DenyLevel
from magtape.remediation import Catalogue
from magtape.ui.history import Admission, AdmissionHistory
from magtape.ui.rows import (
    SEVERITIES,
    CheckInfo,
    ExemptionNote,
    Group,
    Row,
    group_rows,
    row_order,
    severity_word,
)

T = TypeVar("T")

PSS_LABEL = "k8s.t-mobile.com/pod-security"
OMITTED = "magtape.k8s.t-mobile.com/omitted-results"  # audit.report.OMITTED
PER_PAGE = 50
MEMO_SIZE = 64  # sorted namespace lists kept, one per distinct query
_EXEMPTED_BY = re.compile(r"exempted by MagTapeException ([^\s/]+)/([^\s\]]+)")
NAMESPACE_SORTS = ("name", "failing", "warned", "exempted", "deny", "pss")


@dataclass(frozen=True)
class Query:
    namespace: str = ""
    check: str = ""
    severity: str = ""  # high, medium, low
    sort: str = "failing"
    descending: bool = True
    page: int = 1


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    page: int
    pages: int
    total: int


def paginate(items: Sequence[T], page: int, per_page: int = PER_PAGE) -> Page[T]:
    pages = max(1, -(-len(items) // per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    return Page(items[start:start + per_page], page, pages, len(items))


# ----------------------------------------------------------------- the watches' health
class Health:
    """Per watched resource: whether its last contact with the API server succeeded."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._ok: dict[str, bool] = {}
        self._synced: set[str] = set()
        self._since_failure: datetime | None = None

    def expect(self, resource: str) -> None:
        with self._lock:
            self._ok.setdefault(resource, False)

    def succeeded(self, resource: str) -> None:
        with self._lock:
            self._ok[resource] = True
            self._synced.add(resource)
            if all(self._ok.values()):
                self._since_failure = None

    def failed(self, resource: str) -> None:
        with self._lock:
            self._ok[resource] = False
            if self._since_failure is None:
                self._since_failure = self._clock()

    def status(self) -> Stale | None:
        """None when every watch is connected; else what is stale and since when."""
        with self._lock:
            down = sorted(r for r, ok in self._ok.items() if not ok)
            if not down:
                return None
            never = sorted(r for r in down if r not in self._synced)
            return Stale(tuple(down), tuple(never), self._since_failure)


@dataclass(frozen=True)
class Stale:
    disconnected: tuple[str, ...]
    never_synced: tuple[str, ...]
    since: datetime | None  # first failure


# ----------------------------------------------------------------------- namespaces
class NamespaceLabels:
    """Reflector handler: each namespace's labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[str, dict[str, str]] = {}
        self._version = 0

    def replace(self, objects: list[Obj]) -> None:
        labels = {}
        for obj in objects:
            meta = metadata(obj)
            if isinstance(meta.get("name"), str):
                labels[meta["name"]] = dict(meta.get("labels") or {})
        with self._lock:
            self._labels = labels
            self._version += 1

    def apply(self, event_type: str, obj: Obj) -> None:
        meta = metadata(obj)
        name = meta.get("name")
        if not isinstance(name, str):
            return
        with self._lock:
            if event_type == "DELETED":
                self._labels.pop(name, None)
            else:
                self._labels[name] = dict(meta.get("labels") or {})
            self._version += 1

    def versioned(self) -> tuple[int, dict[str, dict[str, str]]]:
        with self._lock:
            return self._version, dict(self._labels)


# ---------------------------------------------------------------------- the reports
# The deny level column of a namespace the webhook does not review (not opted in,
# or one it always leaves out): a level there would read as "enforced".
NOT_ENFORCED = "not enforced"

# The audit's report, one per namespace (audit.report.REPORT_NAME): another
# report carrying its label is not the audit's and must not replace it.
REPORT_NAME = "magtape-audit"


@dataclass
class _NamespaceReport:
    rows: tuple[Row, ...] = ()
    passed: int = 0
    omitted: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (result, severity)
    urls: dict[str, str] = field(default_factory=dict)  # check ID -> https README link


def rows_of_report(report: Mapping[str, Any]) -> tuple[Row, ...]:
    """The report's results about objects of its own namespace: a result naming another
    namespace's object is not the audit's, and would count there."""
    meta = metadata(report)
    ns = str(meta.get("namespace") or "")
    out = []
    for item in report.get("results") or ():
        if not isinstance(item, Mapping):
            continue
        props = item.get("properties") or {}
        resources = item.get("resources") or [{}]
        res = resources[0] if isinstance(resources[0], Mapping) else {}
        if str(res.get("namespace") or ns) != ns:
            continue
        note = str(props.get("note") or "")
        out.append(Row(ns, str(res.get("kind") or ""),
                       str(res.get("name") or ""),
                       str(props.get("checkId") or item.get("rule") or ""),
                       str(item.get("policy") or ""),
                       severity_word(str(item.get("severity") or "")),
                       str(item.get("result") or ""), str(item.get("message") or ""),
                       exemption=ExemptionNote("", note=note) if note else None))
    return tuple(out)


Spawn = Callable[[Callable[[], None]], None]  # runs a function in the background


class ReportStore:
    """Reflector handler for the audit's PolicyReports (one per namespace)."""

    def __init__(self, spawn: Spawn | None = None) -> None:
        self._spawn = spawn
        self._lock = threading.Lock()
        self._by_ns: dict[str, _NamespaceReport] = {}
        self._version = 0
        self._index: ResultIndex | None = None
        self._rebuilding = False
        self._urls: tuple[int, dict[str, str]] = (-1, {})  # (version, links)

    def replace(self, objects: list[Obj]) -> None:
        parsed = dict(self._parse(o) for o in objects if metadata(o).get("name") == REPORT_NAME)
        with self._lock:
            self._by_ns = parsed
            self._version += 1

    def apply(self, event_type: str, obj: Obj) -> None:
        if metadata(obj).get("name") != REPORT_NAME:
            return
        ns, report = self._parse(obj)
        with self._lock:
            if event_type == "DELETED":
                self._by_ns.pop(ns, None)
            else:
                self._by_ns[ns] = report
            self._version += 1

    def url(self, check_id: str) -> str:
        """The README link the current reports give for ``check_id`` (https only), for
        checks the catalogue does not know (custom policies)."""
        with self._lock:
            version, urls = self._urls
            if version != self._version:
                urls = {}
                for report in self._by_ns.values():
                    for check, link in report.urls.items():
                        urls.setdefault(check, link)
                self._urls = (self._version, urls)
        return urls.get(check_id, "")

    def _parse(self, obj: Obj) -> tuple[str, _NamespaceReport]:
        meta = metadata(obj)
        rows = rows_of_report(obj)
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            counts[(r.result, r.severity)] = counts.get((r.result, r.severity), 0) + 1
        urls: dict[str, str] = {}
        for item in obj.get("results") or ():
            props = (item.get("properties") or {}) if isinstance(item, Mapping) else {}
            link = str(props.get("readme") or "")
            if link.startswith("https://") and props.get("checkId"):
                urls.setdefault(str(props["checkId"]), link)
        try:
            omitted = int((meta.get("annotations") or {}).get(OMITTED) or 0)
        except ValueError:
            omitted = 0
        passed = (obj.get("summary") or {}).get("pass") or 0
        return str(meta.get("namespace") or ""), _NamespaceReport(
            rows, int(passed) if isinstance(passed, int) else 0, omitted, counts, urls)

    def namespaces(self) -> dict[str, _NamespaceReport]:
        with self._lock:
            return dict(self._by_ns)

    def index(self) -> ResultIndex:
        """Every result, sorted and indexed. Built by the first view; after a change,
        rebuilt by the next view, or, with ``spawn`` (``magtape ui`` gives a thread),
        in the background while views keep answering from the previous index (a
        rebuild of 50,000 results takes longer than a page view may): a view is then
        at most one rebuild behind the watches."""
        with self._lock:
            current, version = self._index, self._version
            if current is not None and current.version == version:
                return current
            if current is not None and self._spawn is not None:
                if not self._rebuilding:
                    self._rebuilding = True
                    self._spawn(self._rebuild)
                return current
            by_ns = dict(self._by_ns)
        built = ResultIndex(version, by_ns)
        with self._lock:
            if self._index is None or self._index.version < built.version:
                self._index = built
            return self._index

    def _rebuild(self) -> None:
        while True:
            with self._lock:
                version, by_ns = self._version, dict(self._by_ns)
            built = ResultIndex(version, by_ns)
            with self._lock:
                self._index = built
                if self._version == version:
                    self._rebuilding = False
                    return

    def settled(self) -> bool:
        """No change is waiting for the index (tests and the benchmark wait on it)."""
        with self._lock:
            return self._index is not None and self._index.version == self._version

    def all_rows(self) -> tuple[Row, ...]:
        return self.index().rows


class ResultIndex:
    """One version of every result: in display order, by namespace and by check, with
    each check's totals, so a page view never scans 50,000 results to answer."""

    def __init__(self, version: int, by_ns: Mapping[str, _NamespaceReport]) -> None:
        self.version = version
        self.rows = tuple(sorted((r for rep in by_ns.values() for r in rep.rows),
                                 key=row_order))
        by_ns_rows: dict[str, list[Row]] = {}
        by_check: dict[str, list[Row]] = {}
        self.meta: dict[str, tuple[str, str]] = {}  # check -> (severity, policy)
        self.totals: dict[str, list[int]] = {}  # check -> [failing, warned, exempted]
        # namespace -> (check, result, severity) -> count
        self.ns_counts: dict[str, dict[tuple[str, str, str], int]] = {}
        for r in self.rows:
            by_ns_rows.setdefault(r.namespace, []).append(r)
            by_check.setdefault(r.check_id, []).append(r)
            self.meta.setdefault(r.check_id, (r.severity, r.policy))
            self.totals.setdefault(r.check_id, [0, 0, 0])[_column(r.result)] += 1
            counts = self.ns_counts.setdefault(r.namespace, {})
            key = (r.check_id, r.result, r.severity)
            counts[key] = counts.get(key, 0) + 1
        self.by_ns = {ns: tuple(rows) for ns, rows in by_ns_rows.items()}
        self.by_check = {c: tuple(rows) for c, rows in by_check.items()}
        self.check_ids = tuple(sorted(c for c in by_check if c))

    def matching(self, q: Query) -> list[Row] | tuple[Row, ...]:
        """The rows ``q`` selects, in display order, from the narrowest index."""
        if q.namespace:
            base = self.by_ns.get(q.namespace, ())
        elif q.check:
            base = self.by_check.get(q.check, ())
        else:
            base = self.rows
        if (q.check and q.namespace) or q.severity:
            return [r for r in base if _matches(r, q)]
        return base


def _column(result: str) -> int:
    return 0 if result in ("fail", "error") else 1 if result == "warn" else 2


# ------------------------------------------------------------------------ the views
@dataclass(frozen=True)
class NamespaceRow:
    name: str
    deny_level: str
    pss: str
    counts: Mapping[tuple[str, str], int]
    passed: int
    omitted: int
    has_report: bool

    def count(self, result: str, severity: str = "") -> int:
        if severity:
            return self.counts.get((result, severity), 0)
        return sum(n for (res, _), n in self.counts.items() if res == result)

    @property
    def failing(self) -> int:
        return self.count("fail") + self.count("error")


@dataclass(frozen=True)
class CheckSummary:
    info: CheckInfo
    failing: int
    warned: int
    exempted: int


@dataclass(frozen=True)
class ExceptionRow:
    exception: Exemption
    expired: bool


class Model:
    """Everything the page shows; each part kept current by its own watch."""

    def __init__(self, default_level: DenyLevel, catalogue: Catalogue,
                 enforcement_configmap: str = "magtape-enforcement",
                 history_capacity: int = 5000,
                 clock: Callable[[], datetime] | None = None,
                 spawn: Spawn | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.default_level = default_level
        self.catalogue = catalogue
        self.reports = ReportStore(spawn)
        self.namespaces = NamespaceLabels()
        self.enforcement = EnforcementState()
        # The webhook's own handlers: an exception parses here as it does there.
        # The lifetime cap is the API's business; shown as stored.
        self.exception_watch = ExceptionWatch(self.enforcement, timedelta(days=36500))
        self.config_watch = ConfigWatch(self.enforcement, enforcement_configmap)
        self.history = AdmissionHistory(history_capacity, self.clock)
        self.health = Health(self.clock)
        self._memo_lock = threading.Lock()
        self._memo: dict[tuple[int, int, Query], list[NamespaceRow]] = {}
        self._memo_config: EnforcementConfig | None = None

    # -- shared ------------------------------------------------------------------
    def info(self, check_id: str, policy: str = "", severity: str = "") -> CheckInfo:
        remedy = self.catalogue.get(check_id) or (self.catalogue.get(policy) if policy else None)
        if remedy is None:
            return CheckInfo(check_id, policy, severity, url=self.reports.url(check_id))
        return CheckInfo(check_id, policy or remedy.policy, severity, remedy.title, remedy.hint,
                         remedy.url or self.reports.url(check_id))

    def check_ids(self) -> list[str]:
        return sorted({*self.reports.index().check_ids, *(r.id for r in self.catalogue)})

    def deny_level(self, namespace: str, labels: Mapping[str, str] | None) -> DenyLevel:
        config = self.enforcement.config
        if not config.namespaces:  # no namespace rule: the default for every namespace
            return self.default_level
        found = dict(labels or {})
        found.setdefault("kubernetes.io/metadata.name", namespace)
        return config.deny_level_for(found, self.default_level)

    # -- views -------------------------------------------------------------------
    def namespace_rows(self, q: Query) -> Page[NamespaceRow]:
        """One row per namespace, sorted; the sorted list is kept per query until the
        reports, the namespaces or the enforcement ConfigMap change, so paging and
        re-reading cost nothing more."""
        index = self.reports.index()
        labels_version, labels = self.namespaces.versioned()
        config = self.enforcement.config
        key = (index.version, labels_version, replace(q, page=1))
        with self._memo_lock:
            if self._memo_config is not config or any(k[:2] != key[:2] for k in self._memo):
                self._memo.clear()  # kept only for the current state
                self._memo_config = config
            rows = self._memo.get(key)
        if rows is None:
            rows = self._namespace_rows(q, index, labels)
            with self._memo_lock:
                if len(self._memo) >= MEMO_SIZE:
                    self._memo.clear()
                if self._memo_config is config:
                    self._memo[key] = rows
        return paginate(rows, q.page)

    def _namespace_rows(self, q: Query, index: ResultIndex,
                        labels: Mapping[str, Mapping[str, str]]) -> list[NamespaceRow]:
        reports = self.reports.namespaces()
        names = set(labels) | set(reports)
        if q.namespace:
            names &= {q.namespace}
        rows = []
        for name in names:
            rep = reports.get(name)
            counts: Mapping[tuple[str, str], int] = rep.counts if rep else {}
            if rep and (q.check or q.severity):
                counts = {}
                for (check, result, severity), n in index.ns_counts.get(name, {}).items():
                    if (not q.check or check == q.check) and (
                            not q.severity or severity == q.severity):
                        counts[(result, severity)] = counts.get((result, severity), 0) + n
            ns_labels = labels.get(name)
            level = (self.deny_level(name, ns_labels).value if opted_in(name, ns_labels)
                     else NOT_ENFORCED)
            rows.append(NamespaceRow(name, level,
                                     (ns_labels or {}).get(PSS_LABEL, ""), counts,
                                     rep.passed if rep else 0, rep.omitted if rep else 0,
                                     rep is not None))
        key = _NAMESPACE_KEYS.get(q.sort, _NAMESPACE_KEYS["failing"])
        rows.sort(key=lambda r: r.name)  # ties read in name order
        rows.sort(key=key, reverse=q.descending)
        return rows

    def check_summaries(self, q: Query) -> list[CheckSummary]:
        index = self.reports.index()
        if q.namespace:
            totals: dict[str, list[int]] = {}
            for r in index.by_ns.get(q.namespace, ()):
                totals.setdefault(r.check_id, [0, 0, 0])[_column(r.result)] += 1
        else:
            totals = index.totals
        found = [c for c in totals if (not q.check or c == q.check)
                 and (not q.severity or index.meta[c][0] == q.severity)]
        found.sort(key=lambda c: (SEVERITIES.index(index.meta[c][0])
                                  if index.meta[c][0] in SEVERITIES else 3, c))
        return [CheckSummary(self.info(c, index.meta[c][1], index.meta[c][0]), *totals[c])
                for c in found]

    def check_groups(self, q: Query) -> tuple[list[Group], Page[Row]]:
        """The results matching ``q``, one page of them, grouped by check; an exempted
        result carries the exception that covers it (owner, ticket, expiry)."""
        page = paginate(self.reports.index().matching(q), q.page)
        exceptions = {(e.namespace, e.name): e for e in self.enforcement.all_exceptions()}
        shown = [_with_exception(r, exceptions) for r in page.items]
        return group_rows(shown, lambda r: self.info(r.check_id, r.policy, r.severity)), page

    def admissions(self, q: Query) -> Page[Admission]:
        found = [a for a in self.history.newest_first()
                 if (not q.namespace or a.namespace == q.namespace)
                 and (not q.check or q.check in a.checks)
                 and (not q.severity or q.severity in a.severities)]
        return paginate(found, q.page)

    def exception_rows(self, q: Query) -> Page[ExceptionRow]:
        now = self.clock()
        found = sorted((e for e in self.enforcement.all_exceptions()
                        if (not q.namespace or e.namespace == q.namespace)
                        and (not q.check or q.check in e.checks)),
                       key=lambda e: (e.expires_at, e.namespace, e.name))
        return paginate([ExceptionRow(e, not e.active(now)) for e in found], q.page)


_NAMESPACE_KEYS: dict[str, Callable[[NamespaceRow], Any]] = {
    "name": lambda r: r.name,
    "failing": lambda r: r.failing,
    "warned": lambda r: r.count("warn"),
    "exempted": lambda r: r.count("skip"),
    "deny": lambda r: ["OFF", "LOW", "MED", "HIGH"].index(r.deny_level)
    if r.deny_level in ("OFF", "LOW", "MED", "HIGH") else -1,
    "pss": lambda r: r.pss,
}


def _matches(r: Row, q: Query) -> bool:
    return ((not q.namespace or r.namespace == q.namespace)
            and (not q.check or r.check_id == q.check)
            and (not q.severity or r.severity == q.severity))


def _with_exception(row: Row, exceptions: Mapping[tuple[str, str], Exemption]) -> Row:
    if row.exemption is None:
        return row
    m = _EXEMPTED_BY.search(row.exemption.note)
    e = exceptions.get((m.group(1), m.group(2))) if m else None
    if e is None:
        return row
    return Row(row.namespace, row.kind, row.name, row.check_id, row.policy, row.severity,
               row.result, row.message, row.location,
               ExemptionNote(e.ref, e.owner, e.ticket, e.expires_at, row.exemption.note))
