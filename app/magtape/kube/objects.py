"""The vocabulary for Kubernetes objects as MagTape holds them: plain JSON mappings.

Why it exists: objects arrive from reviews, lists, watches and files as
decoded JSON, and every part of MagTape asks them the same few questions
(name, namespace, labels, kind, owner) and trims them the same way. Asked
here once, an object with a missing or mistyped ``metadata`` gives the same
answer everywhere ("" or an empty mapping), never a KeyError in one place and
a wrong decision in another. It imports nothing from MagTape, so every layer
may use it (tests/test_layers.py places it with the shared vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def name(obj: Mapping[str, Any]) -> str:
    value = metadata(obj).get("name")
    return value if isinstance(value, str) else ""


def namespace(obj: Mapping[str, Any]) -> str:
    value = metadata(obj).get("namespace")
    return value if isinstance(value, str) else ""


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    found = metadata(obj).get("labels")
    if not isinstance(found, Mapping):
        return {}
    return {str(k): str(v) for k, v in found.items()}


def kind(obj: Mapping[str, Any]) -> str:
    value = obj.get("kind")
    return value if isinstance(value, str) else ""


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name): unique within one resource."""
    return namespace(obj), name(obj)


def without_managed_fields(obj: Obj) -> Obj:
    """``obj`` without ``metadata.managedFields`` (server-side apply's bookkeeping, often the
    bulk of an object, read by no policy); the same object when it has none."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def with_kind(items: Iterable[Obj], list_doc: Mapping[str, Any], group_version: str) -> None:
    """Fill in ``apiVersion`` and ``kind`` on a List's items, which the API leaves out
    (watch events carry them), so every consumer sees one shape."""
    list_kind = kind(list_doc)
    item_kind = list_kind[:-4] if list_kind.endswith("List") else list_kind
    api_version = list_doc.get("apiVersion") or group_version
    for item in items:
        item.setdefault("apiVersion", api_version)
        if item_kind:
            item.setdefault("kind", item_kind)
