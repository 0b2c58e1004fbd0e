"""The enforcement state ``magtape check`` (and any offline caller) reads from files.

``--exceptions FILE|DIR`` (MagTapeException objects, as applied to a cluster),
``--enforcement FILE`` (the overrides ConfigMap, or its ``enforcement.yaml``
document) and ``--old FILE`` (the objects as they are now, to simulate
UPDATEs, and the owners a controller's object inherits from) become the
same :class:`~magtape.enforcement.Enforcer` the webhook uses, so an offline
run decides exactly as the webhook would. An exception file is held to the
webhook's admission rules (expiry, maximum lifetime counted from its
creationTimestamp or, without one, from now, known check IDs): what the
cluster would refuse is an input error here.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from magtape.check.manifests import InputError, read_manifests
from magtape.enforcement.evaluator import Clock, Enforcer, labels_from_data, utc_now
from magtape.enforcement.exceptions import (
    KIND,
    Exemption,
    InvalidException,
    parse_exception,
    parse_time,
)
from magtape.enforcement.inheritance import Inheritance
from magtape.enforcement.overrides import (
    CONFIG_KEY,
    ConfigInvalid,
    EnforcementConfig,
    parse_config,
)
from magtape.enforcement.state import EnforcementState
from magtape.enforcement.updates import update_review
from magtape.kube.objects import metadata
from magtape.policy import DenyLevel
from magtape.review import Review, make_review

ObjectKey = tuple[str, str, str]  # kind, namespace, name


class OfflineInputError(ValueError):
    """A file given to --exceptions, --enforcement or --old cannot be used; says which and why."""


def read_objects(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object in a file or a directory tree, as ``(source, object)``; Lists flattened.

    Read as ``magtape check`` reads its manifests (:func:`~magtape.check.manifests.
    read_manifests`: the same walk, YAML loader and List handling), but stricter:
    a document that is not a Kubernetes object is an input error here, not a
    document to skip, since every one of them is meant to be enforcement state.
    """
    try:
        found = read_manifests([path], io.StringIO())
    except InputError as exc:
        raise OfflineInputError(str(exc)) from None
    if found.skipped_total:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(found.skipped.items()))
        raise OfflineInputError(f"{path}: {found.skipped_total} document(s) that are not "
                                f"Kubernetes objects ({reasons}); the files given to "
                                "--exceptions and --old hold Kubernetes objects only")
    return [(f"{m.path}#{m.index}", m.obj) for m in found.manifests]


def load_exceptions(paths: Collection[str], *, default_namespace: str, max_lifetime: timedelta,
                    known_checks: Collection[str], clock: Clock = utc_now
                    ) -> list[Exemption]:
    now = clock()
    out: list[Exemption] = []
    for path in paths:
        for source, obj in read_objects(path):
            if obj.get("kind") != KIND:
                raise OfflineInputError(f"{source}: a {obj.get('kind') or 'document'} where a "
                                        f"{KIND} was expected (--exceptions)")
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", default_namespace or "default")
            start = parse_time(meta.get("creationTimestamp")) or now
            try:
                out.append(parse_exception(obj, max_lifetime=max_lifetime, lifetime_start=start,
                                           known_checks=known_checks))
            except InvalidException as exc:
                raise OfflineInputError(f"{source}: {exc}") from None
    return out


def load_config(path: str) -> EnforcementConfig:
    """The overrides from a ConfigMap manifest or from a bare ``enforcement.yaml`` document."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OfflineInputError(f"{path}: cannot read it as YAML: {exc}") from None
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        text = str((doc.get("data") or {}).get(CONFIG_KEY, ""))
    try:
        return parse_config(text, path)
    except ConfigInvalid as exc:
        raise OfflineInputError(str(exc)) from None


def load_old_objects(path: str, default_namespace: str) -> dict[ObjectKey, dict[str, Any]]:
    """The objects as they are now, by kind, namespace and name (``--old``)."""
    return {key_of(obj, default_namespace): obj for _, obj in read_objects(path)}


def key_of(obj: Mapping[str, Any], namespace: str) -> ObjectKey:
    meta = metadata(obj)
    return (str(obj.get("kind", "")), str(meta.get("namespace") or namespace),
            str(meta.get("name", "")))


def review_for(obj: dict[str, Any], namespace: str,
               old_objects: Mapping[ObjectKey, dict[str, Any]],
               username: str = "magtape-check") -> Review:
    """CREATE, or UPDATE from the old object with the same kind, namespace and name,
    as sent by ``username``."""
    old = old_objects.get(key_of(obj, namespace))
    return (update_review(old, obj, namespace, username) if old is not None
            else make_review(obj, namespace, username=username))


def offline_enforcer(default_level: DenyLevel, *, config: EnforcementConfig,
                     exceptions: Collection[Exemption], data: Mapping[str, Any],
                     clock: Clock = utc_now, inheritance: Inheritance | None = None
                     ) -> Enforcer:
    """The webhook's Enforcer over file-based state; namespace labels from ``data``;
    owners (``inheritance``) from the ``--old`` objects."""
    def labels(namespace: str) -> Mapping[str, str] | None:
        return labels_from_data(data, namespace)

    return Enforcer(EnforcementState(config, exceptions), default_level,
                    namespace_labels=labels, clock=clock, inheritance=inheritance)
