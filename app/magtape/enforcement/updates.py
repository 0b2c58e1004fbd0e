"""UPDATE semantics: which failures an UPDATE brought in, and which were already there.

A failure the ``oldObject`` already had (same policy, same message) is not the
update's doing: denying the update would not remove it, only block unrelated
changes (a finalizer removal, a label, a controller's status bookkeeping).
With ``allowExistingViolations`` (the default) such failures warn on every
UPDATE; whatever the setting, an UPDATE that changes only metadata
(finalizers, labels, annotations, ownerReferences and the server's own
bookkeeping) is never denied for them. Deletions are never denied.
"""

from __future__ import annotations

from typing import Any

from magtape.review import Review, review_from_document

# Metadata an UPDATE may change without changing what the policies examine.
# Labels and annotations are here too: a failure that depends on them and
# was not there before is a *new* failure and still denies.
METADATA_ONLY_FIELDS = frozenset({
    "finalizers", "labels", "annotations", "ownerReferences", "managedFields",
    "resourceVersion", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
})


def old_object(review: Review) -> dict[str, Any] | None:
    old = review.request.get("oldObject")
    return old if isinstance(old, dict) else None


def is_update(review: Review) -> bool:
    return review.operation == "UPDATE" and old_object(review) is not None


def metadata_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when ``new`` differs from ``old`` at most in metadata bookkeeping and status."""
    return _essence(old) == _essence(new)


def _essence(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in METADATA_ONLY_FIELDS}
    return out


def old_review(review: Review) -> Review:
    """The same request with the old object in ``object``: what the old object failed."""
    request = {k: v for k, v in review.request.items() if k != "oldObject"}
    request["object"] = old_object(review) or {}
    doc = {"apiVersion": review.api_version, "kind": "AdmissionReview", "request": request}
    return review_from_document(doc)


def update_review(old: dict[str, Any], new: dict[str, Any], namespace: str,
                  username: str = "magtape-check") -> Review:
    """The UPDATE AdmissionReview the API server would send (``magtape check --old``)."""
    from magtape.review import make_review

    base = make_review(new, namespace, operation="UPDATE", username=username)
    request: dict[str, Any] = {**base.request, "oldObject": old}
    doc = {"apiVersion": base.api_version, "kind": "AdmissionReview", "request": request}
    return review_from_document(doc)
