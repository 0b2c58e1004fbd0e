"""One process lists and watches each resource once, however many parts follow it.

Why it exists: the webhook's namespace directory, the policies' replicated
data, the enforcement state and the audit all follow Namespaces (and the
audit, the kinds it audits). docs/architecture.md says they share one
list/watch per resource (magtape.kube.informers); this counts the calls one
webhook process makes against the fake API server, with everything that
watches turned on, and shows an audit that stops leading leaves the shared
watches running and stops the ones only it needed.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry

from enforcementsupport import container, pod
from fakekube import FakeKube
from magtape.server import start
from magtape.settings import (
    Address,
    AuditMode,
    AuditSettings,
    ClusterSettings,
    EngineSettings,
    HttpSettings,
    IdentitySettings,
    NotifySettings,
    Settings,
)
from test_audit_controller import namespace, register, results_of
from test_discovery import NS, builtin_configmaps
from test_exceptions import EXCEPTIONS
from waiting import eventually

LOCAL = Address("127.0.0.1", 0)


def calls(kube: FakeKube) -> tuple[Counter[str], Counter[str]]:
    """(lists, watches) by path and query selector."""
    lists: Counter[str] = Counter()
    watches: Counter[str] = Counter()
    for r in kube.requests:
        if r.method != "GET":
            continue
        key = r.path + "".join(f" {k}={v}" for k, v in sorted(r.query.items())
                               if k in ("labelSelector",))
        if r.is_watch:
            watches[key] += 1
        elif not r.path.rsplit("/", 1)[-1].startswith(("magtape-", "kube-root")):
            lists[key] += 1
    return lists, watches


def test_each_resource_is_listed_and_watched_once(fake_kube: FakeKube) -> None:
    register(fake_kube)
    fake_kube.register(EXCEPTIONS)
    fake_kube.seed(namespace("team-a"), pod("agent", container("a", privileged=True)),
                   *builtin_configmaps("lib", "privileged-pod"))
    settings = Settings(
        identity=IdentitySettings(namespace=NS),
        audit=AuditSettings(mode=AuditMode.ON, lease_seconds=2.0),
        cluster=ClusterSettings(policy_discovery=True,
                                replicate_kinds=Settings.from_env(
                                    {"MAGTAPE_REPLICATE": "v1/pods"}).cluster.replicate_kinds),
        http=HttpSettings(listen=LOCAL, metrics_listen=LOCAL),
        engine=EngineSettings(workers=1),
        notify=NotifySettings(events_enabled=False))
    hook = start(settings, CollectorRegistry(), fake_kube.api_client())
    try:
        eventually(lambda: results_of(fake_kube, "team-a") == {("agent", "MT2001", "fail")}, 60,
                   "the audit's report (every watch is up)")
        lists, watches = calls(fake_kube)
        namespaces = "/api/v1/namespaces"
        pods = "/api/v1/pods"
        # Followed by the directory, replication, enforcement labels and the audit: once.
        assert lists[namespaces] == 1 and watches[namespaces] == 1, (lists, watches)
        # Replicated (MAGTAPE_REPLICATE) and audited: once.
        assert lists[pods] == 1 and watches[pods] == 1, (lists, watches)
        assert all(n == 1 for n in watches.values()), watches
    finally:
        hook.stop(1.0)
