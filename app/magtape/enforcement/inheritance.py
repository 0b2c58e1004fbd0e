"""Derived objects follow their owner's verdict: what already runs keeps rolling out.

Kubernetes' controllers create objects on behalf of an owner: a Deployment's
ReplicaSets, a ReplicaSet's, StatefulSet's, DaemonSet's or Job's Pods, a
CronJob's Jobs. When a namespace is opted in (or a policy tightened), the
owners that already run keep their failures, and denying their derived
objects would stall every rollout and leave every deleted, evicted or
drained Pod un-recreated: an outage of workloads that ran fine.

So a failure of a derived object that its owner's current spec also has
(same check ID, same message, so the same container) is allowed with a
note saying where it came from (``inherited from Deployment legacy/web:
already failing``) and still reported. It is granted only when

- the request comes from a controller identity (``userInfo.username`` in
  ``MAGTAPE_CONTROLLER_IDENTITIES``), and
- the object's controller ``ownerReference`` names an owner that exists in
  the object's namespace with that group, kind, name and uid, as the
  :class:`OwnerLookup` (a watch-fed cache in a cluster; the ``--old``
  objects offline) holds it.

Anything else (a user's Pod with a forged ownerReference, an owner that is
gone or not yet seen, a lookup that fails) is judged on its own, as before;
so are failures the owner does not have (a sidecar a mutating webhook added,
a Pod that differs from its template).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from magtape.decision import Finding, Verdict
from magtape.kube.objects import Obj, metadata

log = logging.getLogger(__name__)

ViolationKey = tuple[str, str]  # check ID, message


class OwnerLookup(Protocol):
    """Finds an owner an ownerReference names, never blocking on the API server."""

    def owner(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        """The owner object (without status), or None when none matches ``ref`` exactly."""
        ...


class NoOwners:
    """No owner is ever found: inheritance is off."""

    def owner(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        return None


NO_OWNERS = NoOwners()


class OwnersFrom:
    """Owners among given objects: ``magtape check --old`` (the objects as they are now)
    and ``magtape audit`` (the objects it listed)."""

    def __init__(self, objects: Iterable[Mapping[str, Any]], default_namespace: str = "") -> None:
        self._objects: dict[tuple[str, str, str, str], Obj] = {}
        for obj in objects:
            meta = obj.get("metadata")
            if isinstance(meta, Mapping):
                ns = str(meta.get("namespace") or default_namespace)
                key = (group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")), ns,
                       str(meta.get("name") or ""))
                self._objects[key] = {**obj, "metadata": {**meta, "namespace": ns}}

    def owner(self, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
        return self._objects.get((group_of(str(ref.get("apiVersion", ""))),
                                  str(ref.get("kind", "")), namespace, str(ref.get("name", ""))))


@dataclass(frozen=True)
class Inheritance:
    """Who may pass an owner's verdict on to what it creates, and where owners are found."""

    controllers: frozenset[str] = frozenset()
    owners: OwnerLookup = NO_OWNERS

    @property
    def identity(self) -> str:
        """One controller identity (sorted first), for callers that simulate a controller's
        request (the audit, ``magtape check --as``); "" when inheritance is off."""
        return min(self.controllers) if self.controllers else ""

    def owner_of(self, username: str, namespace: str, obj: Mapping[str, Any]) -> Obj | None:
        """The owner ``obj`` may inherit from, when the request may inherit at all."""
        if username not in self.controllers:
            if log.isEnabledFor(logging.DEBUG):  # most requests come here: no _name() for nothing
                log.debug("%s/%s: %r is not a controller identity; no inheritance", namespace,
                          _name(obj), username)
            return None
        ref = controller_reference(obj)
        if ref is None:
            return None
        try:
            owner = self.owners.owner(namespace, ref)
        except Exception:  # a lookup defect must never deny or delay more than it would
            log.exception("looking up the owner of %s/%s failed; judging it on its own",
                          namespace, _name(obj))
            return None
        if owner is None or not matches(owner, namespace, ref):
            log.debug("%s/%s: its controller %s %s (uid %s) is not known; no inheritance",
                      namespace, _name(obj), ref.get("kind"), ref.get("name"), ref.get("uid"))
            return None
        return owner


def controller_reference(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``ownerReferences`` entry with ``controller: true`` (there is at most one)."""
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    for ref in refs if isinstance(refs, list) else ():
        if (isinstance(ref, Mapping) and ref.get("controller") is True
                and all(isinstance(ref.get(k), str) and ref.get(k)
                        for k in ("apiVersion", "kind", "name", "uid"))):
            return ref
    return None


def group_of(api_version: str) -> str:
    """``apps/v1`` -> ``apps``; ``v1`` -> "" (the core group). Versions do not matter:
    an owner is the same object whichever version it is read at."""
    return api_version.rpartition("/")[0]


def matches(owner: Mapping[str, Any], namespace: str, ref: Mapping[str, Any]) -> bool:
    """``owner`` is exactly what ``ref`` names: same namespace, group, kind, name and uid."""
    meta = owner.get("metadata")
    if not isinstance(meta, Mapping):
        return False
    return (meta.get("namespace") == namespace and meta.get("name") == ref.get("name")
            and meta.get("uid") == ref.get("uid") and owner.get("kind") == ref.get("kind")
            and group_of(str(owner.get("apiVersion", ""))) == group_of(str(ref["apiVersion"])))


def owner_label(owner: Mapping[str, Any]) -> str:
    meta = metadata(owner)
    return f"{owner.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


INHERITED_FROM = "[inherited from "


def how_allowed(finding: Finding) -> str:
    """How the owner's own failure stands, in a few words for the derived object's note."""
    if finding.verdict in (Verdict.EXEMPTED, Verdict.SCHEDULED, Verdict.INHERITED):
        return finding.note.strip("[]")
    if finding.verdict is Verdict.WARN:
        return "a warning only"
    return "already failing"


def inherit(findings: list[Finding], owner: Mapping[str, Any],
            owner_findings: tuple[Finding, ...]) -> list[Finding]:
    """Allow each denying finding the owner also has, with a note naming the owner."""
    theirs: dict[ViolationKey, Finding] = {}
    for f in owner_findings:
        theirs.setdefault((f.violation.errcode, f.violation.msg), f)
    label = owner_label(owner)
    out = []
    for f in findings:
        same = theirs.get((f.violation.errcode, f.violation.msg))
        if f.verdict is Verdict.DENY and same is not None:
            f = Finding(f.violation, Verdict.INHERITED, _note(label, same))
        out.append(f)
    return out


def _note(label: str, owners_finding: Finding) -> str:
    """``[inherited from Deployment ns/web: already failing]``; when the owner itself
    inherited it, from where it started: ``[inherited from Deployment ns/web via
    ReplicaSet ns/web-6d4: exempted by ...]`` (kinds and names hold no ": ")."""
    if owners_finding.verdict is Verdict.INHERITED and owners_finding.note.startswith(
            INHERITED_FROM):
        origin, sep, how = owners_finding.note[len(INHERITED_FROM):-1].partition(": ")
        if sep:
            return f"{INHERITED_FROM}{origin} via {label}: {how}]"
    return f"{INHERITED_FROM}{label}: {how_allowed(owners_finding)}]"


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or meta.get("generateName") or "") if isinstance(
        meta, Mapping) else ""
