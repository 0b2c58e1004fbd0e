"""The AdmissionReview wire format: typed shapes, validation and responses.

The API server sends ``admission.k8s.io/v1`` (or the older ``v1beta1``)
AdmissionReviews. Everything a client can get wrong is caught here and turned
into :class:`MalformedReview`, which the web layer answers with HTTP 400; the
rest of the code can then rely on the fields it reads being present and typed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from magtape.kube.objects import metadata
from magtape.text import MESSAGE_MAX, clean

SUPPORTED_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")

# Bounds of what is echoed back: a Kubernetes UID is 36 characters; kubectl
# prints every warning, so a few dozen is plenty (the rest are counted).
UID_MAX = 128
WARNINGS_MAX = 32
STATUS_MESSAGE_MAX = 8192

# What the API server sends; None: absent (read as CREATE, as the original did).
OPERATIONS = (None, "CREATE", "UPDATE", "DELETE", "CONNECT")

# Kubernetes objects are shallow; a deeply nested body is an attack on the
# parser or on rego-cpp's recursive evaluator, not a workload.
MAX_NESTING_DEPTH = 100


class GroupVersionKind(TypedDict):
    group: NotRequired[str]
    version: NotRequired[str]
    kind: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    object: dict[str, Any]
    namespace: NotRequired[str]
    name: NotRequired[str]
    operation: NotRequired[str]
    dryRun: NotRequired[bool]
    userInfo: NotRequired[UserInfo]


class Status(TypedDict):
    code: int
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    warnings: NotRequired[list[str]]
    status: NotRequired[Status]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


class MalformedReview(ValueError):
    """The body is not an AdmissionReview this webhook can answer."""


@dataclass(frozen=True)
class Review:
    """A validated AdmissionReview plus the JSON text the engine evaluates."""

    api_version: str
    request: AdmissionRequest
    raw: str  # the whole review as JSON: the policies' `input`

    @property
    def uid(self) -> str:
        return self.request["uid"]

    @property
    def kind(self) -> str:
        return self.request["kind"]["kind"]

    @property
    def object(self) -> dict[str, Any]:
        return self.request["object"]

    @functools.cached_property  # read several times per request
    def namespace(self) -> str:
        ns = self.request.get("namespace") or self.object.get("metadata", {}).get("namespace")
        return ns if isinstance(ns, str) else ""

    @property
    def name(self) -> str:
        meta = self.object.get("metadata", {})
        name = self.request.get("name") or meta.get("name") or meta.get("generateName") or ""
        return name if isinstance(name, str) else ""

    @property
    def operation(self) -> str:
        return self.request.get("operation", "CREATE")

    @property
    def dry_run(self) -> bool:
        return self.request.get("dryRun") is True

    @property
    def username(self) -> str:
        info = self.request.get("userInfo") or {}  # null is valid JSON for a forged review
        name = info.get("username")
        return name if isinstance(name, str) else ""

    def created_by_controller(self, controllers: Collection[str]) -> bool:
        """A Pod one of ``controllers`` (user names) created for its owner, whose
        failures the owner already reported when it was applied.

        Only used to de-duplicate notifications; the Pod is still evaluated. Who
        sent the request counts, not only the reference: a person creating a Pod
        that names an owner, or adding an ephemeral container to a controller's
        Pod (an UPDATE of a subresource), is not the owner's failure.
        """
        if (self.kind != "Pod" or self.operation != "CREATE" or self.request.get("subResource")
                or self.username not in controllers):
            return False
        owners = self.object.get("metadata", {}).get("ownerReferences") or []
        return isinstance(owners, list) and any(
            isinstance(o, dict) and o.get("controller") is True for o in owners
        )


def parse_review(body: bytes, keep_managed_fields: bool = False) -> Review:
    """Validate a request body; raise :class:`MalformedReview` saying what is wrong.

    Unless ``keep_managed_fields``, ``metadata.managedFields`` of the object
    (and oldObject) is left out of the policies' input: it is server-side-apply
    bookkeeping no check needs, often the largest part of an object, and the
    engine's cost of taking the input grows with its size.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedReview(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        doc = _DECODER.decode(text)
    except RecursionError:
        raise MalformedReview("body is nested too deeply") from None
    except MalformedReview:
        raise
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):  # Python's own limit, and its advice: not ours
            raise MalformedReview("body holds an integer of more than 4300 digits") from None
        raise MalformedReview(f"body is not JSON: {exc}") from None
    # Escapes of lone UTF-16 surrogates decode into strings no encoder takes;
    # the API server never sends one (Go's decoder replaces them).
    if "\\u" in text and _has_lone_surrogate(doc):
        raise MalformedReview("body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff "
                              "not in a pair): not valid Unicode")
    # A document with at most MAX_NESTING_DEPTH openers cannot nest deeper
    # (counted in C; brackets inside strings only make the bound stricter), so
    # the Python walk runs only for larger bodies.
    if text.count("{") + text.count("[") > MAX_NESTING_DEPTH:
        _check_depth(doc)
    if not keep_managed_fields and _drop_managed_fields(doc):
        text = json.dumps(doc, separators=(",", ":"))
    return review_from_document(doc, text)


def _not_a_number(name: str) -> Any:
    raise MalformedReview(f"body is not JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise MalformedReview(f"body holds the number {text[:40]}, out of a float's range")
    return value


# Strict JSON, as the API server writes it: NaN and Infinity (which Python's
# decoder accepts) and numbers that overflow to infinity are refused, so they
# get a 400 here instead of failing every policy's evaluation in the engine.
_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite)


def _has_lone_surrogate(doc: Any) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _drop_managed_fields(doc: Any) -> bool:
    """Remove managedFields from request.object/oldObject; True when any was there."""
    request = doc.get("request") if isinstance(doc, dict) else None
    dropped = False
    for key in ("object", "oldObject"):
        obj = request.get(key) if isinstance(request, dict) else None
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(meta, dict) and "managedFields" in meta:
            del meta["managedFields"]
            dropped = True
    return dropped


def review_from_document(doc: Any, raw: str | None = None) -> Review:
    """Validate an already-decoded AdmissionReview document."""
    if not isinstance(doc, dict):
        raise MalformedReview(f"expected a JSON object (AdmissionReview), got {_type(doc)}")
    api_version = doc.get("apiVersion", SUPPORTED_API_VERSIONS[0])
    if api_version not in SUPPORTED_API_VERSIONS:
        raise MalformedReview(
            f"unsupported apiVersion {api_version!r}; expected one of "
            + ", ".join(SUPPORTED_API_VERSIONS)
        )
    request = doc.get("request")
    if not isinstance(request, dict):
        raise MalformedReview(f"'request' must be an object, got {_type(request)}")
    _require(request, "uid", str, "request.uid")
    if not request["uid"]:
        raise MalformedReview("'request.uid' must not be empty")
    if len(request["uid"]) > UID_MAX:  # echoed in the answer: keep that bounded
        raise MalformedReview(f"'request.uid' is longer than {UID_MAX} characters")
    kind = _require(request, "kind", dict, "request.kind")
    if request.get("operation") == "DELETE" and request.get("object") is None:
        # A DELETE carries the object only as oldObject; it is never denied
        # (magtape.enforcement), but must not be answered with a 400 either.
        request["object"] = request.get("oldObject") if isinstance(
            request.get("oldObject"), dict) else {}
    _require(kind, "kind", str, "request.kind.kind")
    obj = _require(request, "object", dict, "request.object")
    for key, typ in (("namespace", str), ("name", str), ("operation", str), ("dryRun", bool)):
        if key in request and request[key] is not None and not isinstance(request[key], typ):
            raise MalformedReview(
                f"'request.{key}' must be {typ.__name__}, got {_type(request[key])}"
            )
    if request.get("operation") not in OPERATIONS:
        raise MalformedReview(f"'request.operation' must be one of {', '.join(OPERATIONS[1:])}, "
                              f"got {clean(str(request['operation']), 64)!r}")
    if "userInfo" in request and not isinstance(request["userInfo"], dict | None):
        got = _type(request["userInfo"])
        raise MalformedReview(f"'request.userInfo' must be an object, got {got}")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise MalformedReview(f"'request.object.metadata' must be an object, got {_type(meta)}")
    return Review(
        api_version=api_version,
        request=request,  # type: ignore[arg-type]  # validated field by field above
        raw=raw if raw is not None else json.dumps(doc, separators=(",", ":")),
    )


def make_review(obj: dict[str, Any], namespace: str = "", operation: str = "CREATE",
                username: str = "magtape-check") -> Review:
    """Wrap an object in the AdmissionReview the API server would send for it.

    Used by ``magtape check`` and the tests, so offline checks evaluate exactly
    what the webhook would.
    """
    api_version = str(obj.get("apiVersion", "v1"))
    group, _, version = api_version.rpartition("/")
    meta = metadata(obj)
    ns = namespace or str(meta.get("namespace", "") or "")
    request: dict[str, Any] = {
        "uid": f"magtape-check-{meta.get('name', 'object')}"[:UID_MAX],
        "kind": {"group": group, "version": version, "kind": obj.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": ""},
        "name": meta.get("name", ""),
        "namespace": ns,
        "operation": operation,
        "userInfo": {"username": username},
        "object": obj,
        "dryRun": False,
    }
    doc = {"apiVersion": SUPPORTED_API_VERSIONS[0], "kind": "AdmissionReview", "request": request}
    return review_from_document(doc)


def build_response(review: Review, allowed: bool, warnings: list[str],
                   message: str | None = None) -> AdmissionReviewResponse:
    """The AdmissionReview answer, in the apiVersion the request used.

    Bounded whatever the review held (magtape.text): each warning escaped and
    cut to MESSAGE_MAX, at most WARNINGS_MAX of them plus one saying how many
    more there were, and a status message of at most STATUS_MESSAGE_MAX.
    """
    response: AdmissionResponse = {"uid": review.uid, "allowed": allowed}
    if warnings:
        shown = [clean(w, MESSAGE_MAX) for w in warnings[:WARNINGS_MAX]]
        if len(warnings) > WARNINGS_MAX:
            shown.append(f"... and {len(warnings) - WARNINGS_MAX} more failure(s)")
        response["warnings"] = shown
    if not allowed:
        response["status"] = {"code": 403, "message": clean(message or "denied by MagTape",
                                                             STATUS_MESSAGE_MAX)}
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}


def _require(container: dict[str, Any], key: str, typ: type, path: str) -> Any:
    if key not in container:
        raise MalformedReview(f"'{path}' is missing")
    value = container[key]
    if not isinstance(value, typ):
        raise MalformedReview(f"'{path}' must be {_TYPE_NAMES[typ]}, got {_type(value)}")
    return value


_TYPE_NAMES: dict[type, str] = {dict: "an object", list: "an array", str: "a string",
                                bool: "a boolean", int: "a number", float: "a number",
                                type(None): "null"}


def _type(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _check_depth(doc: Any) -> None:
    """Reject documents nested deeper than MAX_NESTING_DEPTH."""
    if nested_deeper_than(doc, MAX_NESTING_DEPTH):
        raise MalformedReview(f"body is nested deeper than {MAX_NESTING_DEPTH} levels")


def nested_deeper_than(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests values more than ``limit`` levels deep (iteratively:
    the document may be too deep for recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False
