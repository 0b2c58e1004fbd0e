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
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from magtape.check import render

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
# A file in a walked directory that lists glob patterns to leave out, one per
# line (like --ignore), relative to that directory.
IGNORE_FILE = ".magtapeignore"
# Larger inputs are not manifests; bounded so a stray dump cannot exhaust memory.
MAX_FILE_BYTES = 32 * 1024 * 1024

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
            text = stdin.read(MAX_FILE_BYTES + 1)
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
        if f.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{f}: larger than {MAX_FILE_BYTES // 2**20} MiB; "
                             "is it a manifest? Leave it out with --ignore")
        return f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{f}: cannot read: {exc}") from None


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
    loader = yaml.CSafeLoader(text) if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader(text)
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
    if reason:
        result.skipped[reason] += 1
        return
    kind = doc["kind"]
    items = doc.get("items")
    if kind.endswith("List") and isinstance(items, list):
        lines = {} if rendered else _item_lines(node, line_offset)
        for i, item in enumerate(items):
            at = lines.get(i, line)
            where = f"{name}:{at} items[{i}]" if at else f"{name}#{index} items[{i}]"
            if not isinstance(item, dict) or not item.get("kind"):
                raise InputError(f"{where}: expected a Kubernetes object")
            _check_metadata(where, item)
            result.manifests.append(Manifest(name, index, lines.get(i), item, item=i))
        return
    _check_metadata(f"{name}:{line}" if line else f"{name}#{index}", doc)
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
