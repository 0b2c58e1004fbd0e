"""How to fix a failed check: a short hint and a link, by check ID.

Policy authors keep this data next to the policy it belongs to: each policy
folder (``policies/<name>/``) holds a ``remediation.yaml`` with the check's
``id`` and a one-line ``hint`` (and optionally a ``url``), beside the README
that explains the check in full. The documentation link is
``<docs base>/<name>/README.md``; the base is configurable (``--docs-url``,
``MAGTAPE_DOCS_URL``) and defaults to the policy READMEs of the running
version, at its release tag in the project's repository (:mod:`magtape.project`).

This module sits in the lowest layer (it needs only the typed
:class:`~magtape.policy.Violation`) so every reporter can use it: ``magtape
check`` and its SARIF/JUnit/GitHub output, and the notification adapters
(Events, Slack) through :func:`remedy_line`. Denial messages themselves are
never changed: existing users' tooling matches them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from magtape import project
from magtape.policy import Violation

if TYPE_CHECKING:  # settings imports this module's DEFAULT_DOCS_URL
    from magtape.settings import Settings

# The running version's own policy READMEs, at its release tag (magtape.project).
DEFAULT_DOCS_URL = project.DOCS_URL
DATA_FILE = "remediation.yaml"
README = "README.md"
MAX_HINT_CHARS = 300  # a hint is one line in an Event or a Slack message, not an essay

_ID_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}\d{3,5}$")
_TITLE_ID_RE = re.compile(r"\b([A-Z]{2,}\d{3,5})\b")


class RemediationError(ValueError):
    """A remediation.yaml is malformed; the message names the file."""


@dataclass(frozen=True)
class Remedy:
    """What a user needs to fix one check."""

    id: str  # the check ID, e.g. "MT1009"
    policy: str  # the policy (and folder) name, e.g. "emptydir"
    hint: str  # one line: what to change
    url: str  # the check's documentation; "" when none is known
    title: str = ""  # the README's first heading
    summary: str = ""  # the README's first paragraph: what the check checks
    readme: str = ""  # path of the README, for `magtape explain`


class Catalogue:
    """Remedies by check ID, with the policy name as a fallback key."""

    def __init__(self, remedies: Iterable[Remedy]) -> None:
        self._by_id: dict[str, Remedy] = {}
        self._by_policy: dict[str, Remedy] = {}
        for r in remedies:
            self._by_id.setdefault(r.id, r)
            self._by_policy.setdefault(r.policy, r)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Remedy]:
        return iter(sorted(self._by_id.values(), key=lambda r: r.id))

    def get(self, key: str) -> Remedy | None:
        """By check ID (case-insensitive) or policy name."""
        return self._by_id.get(key.upper()) or self._by_policy.get(key)

    def for_violation(self, violation: Violation) -> Remedy | None:
        return self._by_id.get(violation.errcode) or self._by_policy.get(violation.policy)

    @classmethod
    def from_dirs(cls, dirs: Iterable[str | Path], docs_url: str = DEFAULT_DOCS_URL,
                  link_all: bool = False) -> Catalogue:
        """Read every policy folder below ``dirs``.

        ``docs_url`` links the folders of the built-in policies (``link_all``);
        a custom policy is linked only when its remediation.yaml names a ``url``.
        """
        remedies = []
        for d in dirs:
            root = Path(d)
            folders = sorted({f.parent for f in root.rglob(DATA_FILE)}) if root.is_dir() else []
            for folder in folders:
                remedies.append(_read_folder(folder, docs_url if link_all else ""))
        return cls(remedies)


def _read_folder(folder: Path, docs_url: str) -> Remedy:
    path = folder / DATA_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RemediationError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise RemediationError(f"{path}: expected a mapping with 'id' and 'hint'")
    check_id, hint, url = data.get("id"), data.get("hint"), data.get("url")
    if not isinstance(check_id, str) or not _ID_RE.match(check_id):
        raise RemediationError(f"{path}: 'id' must be a check ID such as MT1009, "
                               f"got {check_id!r}")
    if not isinstance(hint, str) or not hint.strip() or "\n" in hint.strip() \
            or len(hint) > MAX_HINT_CHARS:
        raise RemediationError(f"{path}: 'hint' must be one line of at most "
                               f"{MAX_HINT_CHARS} characters")
    if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        raise RemediationError(f"{path}: 'url' must be an http(s) URL, got {url!r}")
    readme = folder / README
    title, summary = _readme_head(readme)
    link = url or (f"{docs_url.rstrip('/')}/{folder.name}/{README}" if docs_url else "")
    return Remedy(check_id, folder.name, hint.strip(), link, title, summary,
                  str(readme) if readme.is_file() else "")


def _readme_head(readme: Path) -> tuple[str, str]:
    """The first heading and the first paragraph after it, markup-light."""
    try:
        lines = readme.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return "", ""
    title, para = "", list[str]()
    for line in lines:
        if not title:
            if line.startswith("#"):
                title = line.lstrip("#").strip()
            continue
        if not line.strip():
            if para:
                break
            continue
        if line.startswith(("#", "```")):
            break
        para.append(line.strip())
    return title, " ".join(para).replace("**", "")


_default: dict[str, Catalogue] = {}
_default_lock = threading.Lock()


def builtin_policies_root() -> Path | None:
    """The built-in policy folders: inside the installed wheel, else the source tree's
    (the one lookup; ``engine.sources.builtin_policy_dir`` turns None into an error)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "builtin_policies", here.parents[1] / "policies"):
        if candidate.is_dir():
            return candidate
    return None


def default_catalogue(docs_url: str = DEFAULT_DOCS_URL) -> Catalogue:
    """The built-in policies' remedies (read once per docs URL)."""
    with _default_lock:
        if docs_url not in _default:
            root = builtin_policies_root()
            _default[docs_url] = (Catalogue.from_dirs([root], docs_url, link_all=True)
                                  if root else Catalogue(()))
        return _default[docs_url]


def catalogue_for(policy_dirs: Iterable[str | Path], docs_url: str = DEFAULT_DOCS_URL,
                  ) -> Catalogue:
    """The built-in remedies plus those of custom policy directories (which win)."""
    custom = Catalogue.from_dirs(policy_dirs, docs_url)
    return Catalogue([*custom, *default_catalogue(docs_url)])


def remedies_for(settings: Settings) -> Catalogue:
    """The remedies every channel uses (Events, Slack, ``check``, the audit): the built-in
    policies' and those of ``MAGTAPE_POLICY_DIRS`` / ``--policies``, which win."""
    return catalogue_for(settings.engine.policy_dirs, settings.docs_url)


def remedy_lines(violations: Iterable[Violation], catalogue: Catalogue | None = None
                 ) -> list[str]:
    """One ``How to fix`` line per failed check, for an Event note or a Slack message.

    Empty when no remedy is known. The denial message is left untouched; this
    text goes beside it.
    """
    cat = catalogue if catalogue is not None else default_catalogue()
    seen: dict[str, Remedy] = {}
    for v in violations:
        r = cat.for_violation(v)
        if r is not None:
            seen.setdefault(r.id, r)
    return [f"{r.id}: {r.hint}" + (f" ({r.url})" if r.url else "") for r in seen.values()]


def remedy_line(violations: Iterable[Violation], catalogue: Catalogue | None = None) -> str:
    """:func:`remedy_lines`, one per line."""
    return "\n".join(remedy_lines(violations, catalogue))


def with_remedies(message: str, violations: Iterable[Violation],
                  docs_url: str = DEFAULT_DOCS_URL) -> str:
    """``message`` unchanged, then `` | How to fix: `` and each remedy, on one line.

    For an Event note: the original message stays first and intact, so tooling
    matching it keeps working, and the note stays a single line (notes carry
    no raw control characters, newlines included).
    """
    lines = remedy_lines(violations, default_catalogue(docs_url))
    return f"{message} | How to fix: " + " | ".join(lines) if lines else message
