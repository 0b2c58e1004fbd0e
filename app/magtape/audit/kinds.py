"""Which collections the audit reads, and which of their objects it reports on.

``MAGTAPE_AUDIT_KINDS`` lists resources as ``MAGTAPE_REPLICATE`` does
(``apps/v1/deployments``); the default covers every kind the built-in
policies target at the versions current clusters serve. A resource the API
server does not serve (``policy/v1`` before Kubernetes 1.21) is left out with
one log line rather than retried forever.

An object whose controller (``ownerReferences[].controller``) is of an
audited kind is not reported itself: its owner is, with the same pod
template, so a failing Deployment shows once, not once more per ReplicaSet
and Pod.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from magtape.kube.rest import KubeError, RawApi, ResourceRef
from magtape.settings import ConfigError, KindRef

log = logging.getLogger(__name__)

DEFAULT_KINDS = (
    "v1/pods", "v1/services", "v1/replicationcontrollers", "apps/v1/deployments",
    "apps/v1/statefulsets", "apps/v1/daemonsets", "apps/v1/replicasets", "batch/v1/jobs",
    "batch/v1/cronjobs", "policy/v1/poddisruptionbudgets")
# The kind of each plural above (list items come without one; the reflector
# fills it from the List's kind, this names owners before any list).
KIND_OF = {"pods": "Pod", "services": "Service", "replicationcontrollers": "ReplicationController",
           "deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
           "replicasets": "ReplicaSet", "jobs": "Job", "cronjobs": "CronJob",
           "poddisruptionbudgets": "PodDisruptionBudget"}


def owner_kinds(configured: Iterable[KindRef]) -> frozenset[str]:
    """The kinds of ``MAGTAPE_CONTROLLER_OWNER_KINDS`` (a plural not in KIND_OF, such as
    Argo Rollouts' ``rollouts``, by its singular: ``Rollout``)."""
    def kind(plural: str) -> str:
        if plural in KIND_OF:
            return KIND_OF[plural]
        return (plural[:-1] if plural.endswith("s") else plural).capitalize()

    return frozenset(kind(k.plural) for k in configured)


def audit_kinds(configured: Iterable[KindRef]) -> list[ResourceRef]:
    """The resources to audit (``MAGTAPE_AUDIT_KINDS``, else the default)."""
    kinds = list(configured) or [KindRef.parse(text) for text in DEFAULT_KINDS]
    refs: list[ResourceRef] = []
    for kind in kinds:
        ref = ResourceRef(kind.group_version, kind.plural)
        if ref.plural == "namespaces":  # cluster-scoped: there is no namespace report for it
            raise ConfigError(f"MAGTAPE_AUDIT_KINDS: {ref} cannot be audited; remove it")
        if ref not in refs:
            refs.append(ref)
    return refs


def served(api: RawApi, refs: Iterable[ResourceRef], namespace: str) -> list[ResourceRef]:
    """The resources the API server serves (one list in MagTape's own, small namespace)."""
    out = []
    for ref in refs:
        try:
            api.list(ref, namespace)
        except KubeError as exc:
            if exc.not_served:
                log.info("audit: the API server does not serve %s; not audited", ref)
                continue
        out.append(ref)  # served, or another error the reflector reports and retries
    return out


def owned_by_audited(obj: Mapping[str, Any], kinds: frozenset[str]) -> bool:
    """Its controller is of an audited kind, so its owner carries its findings."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller") and owner.get("kind") in kinds:
            return True
    return False
