"""Reading Kubernetes manifests from files, directories and stdin.

Shared by ``magtape check`` and ``magtape review``. A repository holds more
YAML than Kubernetes objects: kustomizations, Helm charts and values files,
CI and tool configurations. Those documents are *skipped and counted*, never
an error, so ``magtape check .`` works on a real repository; a document that
claims to be a Kubernetes object (``apiVersion`` and ``kind``) but is broken
is an :class:`InputError` naming the file and line, because a typo in a real
manifest must not pass CI silently.

Every object keeps where it came from (path, document index, line, List
item) so reports can link the exact place.

Values are read as kubectl reads them, and an object is checked only when
JSON (and so the API server and the policy engine) can carry every value in
it: an unquoted ``2024-01-01`` stays the text, as in kubectl (go-yaml v2),
integer and boolean mapping keys become their text as in sigs.k8s.io/yaml,
and what PyYAML can build but JSON cannot (``.inf``/``.nan``, integers past
float64, ``!!binary``, ``!!set``, nesting past 100 levels, a self-referencing
alias, an alias bomb) is an :class:`InputError` naming the file, line and
path of the value, not a traceback.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from magtape.check import render
from magtape.review import MAX_NESTING_DEPTH

# The webhook counts nesting from the AdmissionReview, where an object is the
# third level (review, request, object): counted the same way here, what
# `check` accepts is what the webhook accepts.
_OBJECT_DEPTH = 3
_DEEP = (f"nested deeper than {MAX_NESTING_DEPTH - _OBJECT_DEPTH + 1} levels ({MAX_NESTING_DEPTH} "
         "in its AdmissionReview, the webhook's limit; a self-referencing alias?)")

try:
    from yaml import CSafeLoader as _BaseLoader  # libyaml: its marks give the line numbers
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
# A file in a walked directory that lists glob patterns to leave out, one per
# line (like --ignore), relative to that directory.
IGNORE_FILE = ".magtapeignore"
# Larger inputs are not manifests; bounded so a stray dump cannot exhaust memory.
MAX_FILE_BYTES = 32 * 1024 * 1024

# Values in one document, once YAML aliases are expanded, beyond which it is an
# alias bomb ("billion laughs") rather than a manifest: far more than one object
# the API server stores (etcd keeps at most ~1.5 MB) can hold. A document whose
# text is longer (a `kubectl get -o yaml` List of a whole cluster) may have as
# many values as it has characters, what it could hold without any alias.
MAX_DOCUMENT_VALUES = 1_000_000

# Documents that have apiVersion and kind but configure a tool rather than
# describe a cluster object: (API group prefix, kind or "*").
TOOL_CONFIGS: tuple[tuple[str, str], ...] = (
    ("kustomize.config.k8s.io/", "*"),   # Kustomization, Component
    ("kind.x-k8s.io/", "*"),              # kind cluster configs
    ("kubeadm.k8s.io/", "*"),
    ("skaffold/", "*"),
    ("kubelet.config.k8s.io/", "*"),
    ("kubeproxy.config.k8s.io/", "*"),
    ("apiserver.config.k8s.io/", "*"),
    ("v1", "Config"),                     # a kubeconfig
)

# Built-in kinds that live outside namespaces; reports show them without one and
# their AdmissionReview carries no namespace, as the API server would send.
CLUSTER_SCOPED_KINDS = frozenset({
    "APIService", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding",
    "ComponentStatus", "CSIDriver", "CSINode", "CustomResourceDefinition", "FlowSchema",
    "IngressClass", "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume",
    "PodSecurityPolicy", "PriorityClass", "PriorityLevelConfiguration", "RuntimeClass",
    "StorageClass", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration", "VolumeAttachment", "ClusterIssuer",
})


class InputError(ValueError):
    """A manifest cannot be read; the message names the file and document."""


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and where it was read from."""

    path: str  # file path as given or found, "<stdin>" for stdin
    index: int  # 1-based document number in the file
    line: int | None  # 1-based line of the object's first key, when the parser gives one
    obj: dict[str, Any]
    item: int | None = None  # 0-based position in a List's items

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def cluster_scoped(self) -> bool:
        return self.kind in CLUSTER_SCOPED_KINDS

    @property
    def is_file(self) -> bool:
        return self.path != "<stdin>"

    @property
    def location(self) -> str:
        """``path:line`` (or ``path#document``) plus the List item, for humans."""
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}#{self.index}"
        return where if self.item is None else f"{where} items[{self.item}]"

    def namespace(self, default: str) -> str:
        """The object's namespace; "" for cluster-scoped kinds."""
        if self.cluster_scoped:
            return ""
        meta = self.obj.get("metadata") or {}
        return str(meta.get("namespace") or default or "default")


@dataclass
class Input:
    """Everything read: the objects, and what was skipped and why."""

    manifests: list[Manifest] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> documents

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip_note(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"skipped {self.skipped_total} non-Kubernetes documents ({reasons})"


def read_manifests(paths: Sequence[str], stdin: TextIO,
                   ignore: Sequence[str] = ()) -> Input:
    """Read ``paths`` ("-" is stdin); directories are walked for YAML/JSON files.

    In a directory walk, hidden entries (``.git``, ``.venv``), paths matching
    ``ignore`` or a ``.magtapeignore`` pattern, and Helm chart templates (not
    YAML until rendered) are left out.
    """
    result = Input()
    for name, text in read_sources(paths, stdin, ignore, result):
        parse_document_text(result, name, text)
    return result


def read_sources(paths: Sequence[str], stdin: TextIO, ignore: Sequence[str],
                 result: Input) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of each input file, in order, read as they are asked for.

    What the directory walk leaves out is counted in ``result.skipped``. Lazy,
    so a caller that parses each file before asking for the next reports the
    first problem in input order. Kustomize directories and Helm charts are
    rendered (:mod:`magtape.check.render`): their ``name`` is the
    kustomization file or Chart.yaml, their text the rendered stream.
    """
    patches: set[Path] | None = None  # read once the first path is known to exist
    for path in paths:
        if path == STDIN:
            try:
                text = stdin.read(MAX_FILE_BYTES + 1)
                text.encode("utf-8")  # stdin may decode bytes it cannot as lone surrogates
            except UnicodeError:
                raise InputError("<stdin>: not valid UTF-8") from None
            if len(text) > MAX_FILE_BYTES:
                raise InputError(f"<stdin>: more than {MAX_FILE_BYTES // 2**20} MiB; "
                                 "split the input or pass files")
            yield "<stdin>", text
            continue
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path}: no such file or directory")
        if patches is None:
            patches = _patches([Path(q) for q in paths if q != STDIN])
        if p.is_dir():
            yield from _walk(p, ignore, result, patches)
        elif p.name in render.KUSTOMIZATION_FILES:  # the kustomization names its directory
            yield str(p), _rendered(render.render_kustomization, p.parent)
        elif p.resolve() in patches:
            result.skipped["Kustomize patch"] += 1
        else:
            yield str(p), _read(p)


def _read(f: Path) -> str:
    try:
        # Read up to the bound rather than trust the size: a device, a pipe or a
        # /proc file says 0 and may never end (/dev/zero).
        with f.open(encoding="utf-8") as stream:
            text = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{f}: cannot read: {exc}") from None
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"{f}: larger than {MAX_FILE_BYTES // 2**20} MiB; "
                         "is it a manifest? Leave it out with --ignore")
    return text


def _walk(root: Path, ignore: Sequence[str], result: Input,
          patches: set[Path]) -> Iterator[tuple[str, str]]:
    """``(name, text)`` below ``root``, each directory's files before its subdirectories.

    A directory with a kustomization or a Chart.yaml is one rendered source
    (not walked further); a Kustomize Component's is walked without its patches.
    """
    patterns = [*ignore, *_ignore_file(root)]

    def walk(d: Path) -> Iterator[tuple[str, str]]:
        try:
            kustomization = render.kustomization_in(d)
            entries = sorted(d.iterdir())
        except OSError as exc:
            raise InputError(f"{d}: cannot list: {exc}") from None
        if kustomization is not None:
            if not render.is_component(_kustomization(kustomization)):
                yield str(kustomization), _rendered(render.render_kustomization, d)
                return
        elif (d / render.CHART_FILE).is_file():
            yield str(d / render.CHART_FILE), _rendered(render.render_chart, d)
            return
        subdirs = []
        for e in entries:
            rel = e.relative_to(root).as_posix()
            if e.name.startswith(".") or _ignored(rel, patterns):
                continue
            if e.is_dir():
                if not e.is_symlink():  # a link back up would loop forever
                    subdirs.append(e)
            elif e.suffix in MANIFEST_SUFFIXES and e.is_file():
                if e.resolve() in patches:
                    result.skipped["Kustomize patch"] += 1
                else:
                    yield str(e), _read(e)
        for sub in subdirs:
            yield from walk(sub)

    return walk(root)


def _patches(roots: Sequence[Path]) -> set[Path]:
    return render.patches_below(r for r in roots if r.exists())


def _kustomization(f: Path) -> dict[str, Any]:
    try:
        return render.read_kustomization(f)
    except render.RenderError as exc:
        raise InputError(str(exc)) from None


def _rendered(how: Callable[[Path], str], directory: Path) -> str:
    try:
        text = how(directory)
    except render.RenderError as exc:
        raise InputError(str(exc)) from None
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"{directory}: renders to more than {MAX_FILE_BYTES // 2**20} MiB; "
                         "check its parts separately")
    return text


def _ignore_file(root: Path) -> list[str]:
    f = root / IGNORE_FILE
    if not f.is_file():
        return []
    lines = (ln.strip() for ln in _read(f).splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _ignored(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p.rstrip("/")) or fnmatch.fnmatchcase(name, p)
               for p in patterns)


# Plain scalars go-yaml v2 (kubectl, sigs.k8s.io/yaml) reads as strings but YAML
# 1.1 does not: timestamps (a date in an annotation must stay its text, not
# become a date JSON cannot carry) and "=" (YAML 1.1's "value" key).
_KUBECTL_STRINGS = frozenset({"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"})
# YAML 1.1's numbers without their base-60 forms, which go-yaml v2 reads as
# strings ("12:30" stays text) and PyYAML converts in quadratic time.
_KUBECTL_NUMBERS = {
    "tag:yaml.org,2002:int": re.compile(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    "tag:yaml.org,2002:float": re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
}


def _kubectl_resolvers(resolvers: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of a loader's ``yaml_implicit_resolvers`` without _KUBECTL_STRINGS,
    its numbers those of _KUBECTL_NUMBERS."""
    return {first: [(tag, _KUBECTL_NUMBERS.get(tag, regexp)) for tag, regexp in pairs
                    if tag not in _KUBECTL_STRINGS]
            for first, pairs in resolvers.items()}


class _HugeInteger(str):
    """The text of an integer Python will not convert (more than 4300 digits);
    refused by :func:`_check_values` with the other integers past float64."""


class _Loader(_BaseLoader):
    """The safe loader, resolving plain scalars as kubectl does (see above)."""

    yaml_implicit_resolvers = _kubectl_resolvers(_BaseLoader.yaml_implicit_resolvers)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python's 4300-digit limit, or "0x_" (no digits): kubectl's text
            digits = node.value.lstrip("+-").replace("_", "")
            return _HugeInteger(node.value) if digits.isdigit() else node.value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def parse_document_text(result: Input, name: str, text: str, line_offset: int = 0,
                        index_offset: int = 0,
                        each_document: Callable[[], None] | None = None) -> int:
    """Parse the YAML stream ``text`` of file ``name`` into ``result``; the documents read.

    ``text`` may be a slice of the file (see :mod:`magtape.check.shards`): its
    first line is line ``line_offset + 1`` of the file and its first document
    is document ``index_offset + 1``, so locations are the file's either way.
    The libyaml (C) loader when PyYAML has it; its marks give the line numbers.
    ``each_document`` is called after each document (it may raise, to stop).
    """
    loader = _Loader(text)
    index = index_offset
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # an empty stream
                break
            index += 1
            doc = loader.construct_document(node)
            _classify(result, name, index, node, doc, line_offset)
            if each_document is not None:
                each_document()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1 + line_offset}" if mark is not None else name
        raise InputError(f"{where}: not valid YAML/JSON: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()
    return index - index_offset


def _classify(result: Input, name: str, index: int, node: yaml.Node, doc: Any,
              line_offset: int) -> None:
    line: int | None = node.start_mark.line + 1 + line_offset
    rendered = render.is_rendered_name(name)
    if rendered:
        line = None  # a line of the rendered stream, not of the kustomization file
    if doc is None:
        return
    reason = _not_kubernetes(doc)
    if reason:  # skipped, never sent anywhere: its values need not fit JSON
        result.skipped[reason] += 1
        return
    where = f"{name}:{line}" if line else f"{name}#{index}"
    budget = max(MAX_DOCUMENT_VALUES, node.end_mark.index - node.start_mark.index)
    used = 0  # values in the document so far: a List's items share the budget
    kind = doc["kind"]
    items = doc.get("items")
    if kind.endswith("List") and isinstance(items, list):
        lines = {} if rendered else _item_lines(node, line_offset)
        for i, item in enumerate(items):
            at = lines.get(i, line)
            where = f"{name}:{at} items[{i}]" if at else f"{name}#{index} items[{i}]"
            if not isinstance(item, dict) or not item.get("kind"):
                raise InputError(f"{where}: expected a Kubernetes object")
            used = _check_values(where, item, budget, used)
            _check_metadata(where, item)
            result.manifests.append(Manifest(name, index, lines.get(i), item, item=i))
        return
    if kind == "List" or (kind.endswith("List") and "items" in doc):
        got = f", not {_describe_value(items)}" if "items" in doc else "; it has none"
        raise InputError(f"{where}: a {kind}'s items must be a list of objects{got}")
    _check_values(where, doc, budget, used)
    _check_metadata(where, doc)
    result.manifests.append(Manifest(name, index, line, doc))


def _not_kubernetes(doc: Any) -> str:
    """Why ``doc`` is not a Kubernetes object, or "" when it is one."""
    if not isinstance(doc, dict):
        return "not a mapping"
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not (isinstance(api_version, str) and api_version and isinstance(kind, str) and kind):
        return "without apiVersion/kind"
    for prefix, tool_kind in TOOL_CONFIGS:
        group_matches = (api_version.startswith(prefix) if prefix.endswith("/")
                         else api_version == prefix)
        if group_matches and tool_kind in ("*", kind):
            return kind
    return ""


def _check_metadata(where: str, obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in ("name", "generateName", "namespace"):
            value = meta.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: metadata.{key} must be a string, "
                                 f"not {_describe_value(value)}")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        raise InputError(f"{where}: {obj.get('kind')} has no metadata.name")


def _item_lines(node: yaml.Node, line_offset: int) -> dict[int, int]:
    """Line of each element of a List's ``items`` sequence."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "items" \
                and isinstance(value, yaml.SequenceNode):
            return {i: item.start_mark.line + 1 + line_offset
                    for i, item in enumerate(value.value)}
    return {}


def _check_values(where: str, obj: dict[str, Any], limit: int, used: int) -> int:
    """Refuse what JSON cannot carry in ``obj``; ``used`` plus the values in it.

    ``used`` values of the document are already counted (earlier List items),
    ``limit`` is the document's. Integer and boolean mapping keys are made
    text on the way.
    """
    count = _count_json_values(obj, limit, used)
    if count > limit:
        raise InputError(f"{where}: more than {limit:,} values in the document once YAML "
                         "aliases are expanded: it looks like an alias bomb, not a manifest")
    if count < 0:
        raise InputError(f"{where}: {_find_problem(obj)}")
    return count


def _count_json_values(obj: dict[str, Any], limit: int, used: int) -> int:
    """``used`` plus the values in ``obj``, or -1 when JSON cannot carry one of them.

    One iterative walk (a document may nest too deep for recursion) that
    visits a value as often as aliases repeat it, so it stops once past
    ``limit``. It keeps only (value, depth), as ``magtape check`` reads
    thousands of objects: the path of a problem is found by a second walk,
    :func:`_find_problem`, only when there is one.
    """
    stack: list[tuple[Any, int]] = [(obj, _OBJECT_DEPTH)]
    count = used + 1
    while stack:
        value, depth = stack.pop()
        if type(value) is dict:
            if _string_keys(value):
                return -1
            children: Iterable[Any] = value.values()
        else:
            children = value
        count += len(value)
        if count > limit:
            return count
        if depth >= MAX_NESTING_DEPTH and value:  # its values would be one level deeper
            return -1
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is not str and _scalar_problem(child):
                return -1
    return count


def _find_problem(obj: dict[str, Any]) -> str:
    """``path: problem`` for the first value :func:`_check_values` refuses, in its order."""
    stack: list[tuple[Any, int, str]] = [(obj, _OBJECT_DEPTH, "")]
    while stack:
        value, depth, path = stack.pop()
        if type(value) is dict:
            problem = _string_keys(value)
            if problem:
                return f"{path or 'the object'}: {problem}"
            children = [(v, _key_path(path, k)) for k, v in value.items()]
        else:
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if depth >= MAX_NESTING_DEPTH and children:
            return f"{_short_path(children[0][1])}: {_DEEP}"
        for child, child_path in children:
            if type(child) in (dict, list):
                stack.append((child, depth + 1, child_path))
            elif type(child) is not str and (problem := _scalar_problem(child)):
                return f"{child_path}: {problem}"
    return "a value JSON cannot carry"  # not reached: _check_values found one


def _string_keys(mapping: dict[Any, Any]) -> str:
    """Make integer and boolean keys their text, as sigs.k8s.io/yaml does (8080 ->
    "8080", true -> "true"); the problem with any other non-string key, or ""."""
    if all(type(key) is str for key in mapping):
        return ""
    keys = []
    for key in mapping:
        if isinstance(key, bool):
            keys.append("true" if key else "false")
        elif (isinstance(key, int) and _fits_float64(key)) or isinstance(key, str):
            keys.append(str(key))  # a str here is a _HugeInteger: already its text
        else:
            return (f"the mapping key {_describe_value(key)} is not a string "
                    "(keys are strings, integers or booleans)")
    values = list(mapping.values())
    mapping.clear()  # in place: aliases share it; a key that repeats: the last wins
    mapping.update(zip(keys, values, strict=True))
    return ""


def _scalar_problem(value: Any) -> str:
    """Why JSON cannot carry the scalar ``value`` (not a str), or ""."""
    if value is None or type(value) is bool:
        return ""
    if type(value) is int:
        if value.bit_length() < 1024 or _fits_float64(value):
            return ""
        return (f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits "
                "is beyond float64's range: JSON and the API server cannot carry it")
    if type(value) is float:
        if math.isfinite(value):
            return ""
        return (f"{_describe_value(value)}: .inf/.nan are not numbers JSON or the API "
                "server can carry (a number past float64's range reads as .inf)")
    if isinstance(value, _HugeInteger):
        return (f"an integer of {sum(c.isdigit() for c in value)} digits is beyond "
                "float64's range: JSON and the API server cannot carry it")
    return f"{_describe_value(value)} is not a JSON value (leave out the YAML tag)"


def _fits_float64(value: int) -> bool:
    """Whether ``value`` rounds to a finite float64 (2**1024 - 1 does not: the engine
    reads JSON numbers past 64-bit integers as float64, and refuses infinity)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


# How a value built from an explicit YAML tag shows in a message.
_TAGGED: dict[type, str] = {bytes: "!!binary data", set: "a !!set",
                            tuple: "an !!omap or !!pairs entry"}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _describe_value(value: Any) -> str:
    """A short, safe description of ``value`` for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, float) or (isinstance(value, int) and value.bit_length() <= 64):
        return repr(value)
    if isinstance(value, int):
        return "a large integer"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if type(value) in _TAGGED:
        return _TAGGED[type(value)]
    if hasattr(value, "isoformat"):  # date, datetime: an explicit !!timestamp
        return f"the !!timestamp {value.isoformat()}"
    return f"a {type(value).__name__}"


def _key_path(path: str, key: str) -> str:
    """``path`` and one more key, as in ``metadata.annotations["example.com/built"]``."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key if len(key) <= 80 else key[:77] + '...')}]"


def _short_path(path: str, keep: int = 60) -> str:
    """A path past the nesting limit, its middle left out."""
    return path if len(path) <= 2 * keep else f"{path[:keep]}...{path[-keep:]}"
