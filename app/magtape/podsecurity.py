"""Which Pod Security Standards level and version apply: the shared vocabulary.

The PSS checks (``policies/pss-*``, MT3001-MT3099) decide what applies to an
object from, in order: ``data.magtape.pod_security.override`` (``magtape check
--pod-security``: every object), the namespace's MagTape labels
(:data:`LEVEL_LABEL`, :data:`VERSION_LABEL`), then
``data.magtape.pod_security.default`` (``MAGTAPE_POD_SECURITY``). This module
parses those settings once, puts them into the engine's ``data`` in that
shape, and reads namespace labels for ``magtape audit`` (which also reports
namespaces that carry only the standard Pod Security Admission labels as
candidates: MagTape never enforces those). Nothing here evaluates a policy.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The MagTape labels a namespace chooses its level and version with (docs/pod-security.md).
LEVEL_LABEL = "k8s.t-mobile.com/pod-security"
VERSION_LABEL = "k8s.t-mobile.com/pod-security-version"
# The standard Pod Security Admission labels, by mode; only ever reported.
PSA_PREFIX = "pod-security.kubernetes.io/"
PSA_MODES = ("enforce", "audit", "warn")
LATEST = "latest"
# Where the PSS checks read the cluster-wide default and the offline override.
DATA_PATH = ("magtape", "pod_security")

_VERSION = re.compile(r"v1\.(0|[1-9][0-9]{0,2})")


class Level(enum.Enum):
    """A PSS level; ``off`` is the absence of one (no PSS check applies)."""

    OFF = "off"
    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


# What MAGTAPE_POD_SECURITY accepts: privileged allows everything, so as a
# cluster-wide default it means the same as off and is not offered.
SETTING_LEVELS = (Level.OFF, Level.BASELINE, Level.RESTRICTED)
# What --pod-security and the namespace label accept.
CHOSEN_LEVELS = (Level.PRIVILEGED, Level.BASELINE, Level.RESTRICTED)
VERSION_ACCEPTED = "v1.N (v1.0, v1.25, ...) or latest"


def parse_version(raw: str) -> str:
    """``v1.N`` or ``latest`` (case-insensitive for ``latest``); ValueError otherwise."""
    text = raw.strip()
    if text.lower() == LATEST:
        return LATEST
    if not _VERSION.fullmatch(text):
        raise ValueError(raw)
    return text


@dataclass(frozen=True)
class PodSecurity:
    """A level at a version, as the PSS checks read it from ``data``."""

    level: Level
    version: str = LATEST

    @classmethod
    def parse(cls, raw: str, accepted: tuple[Level, ...] = CHOSEN_LEVELS) -> PodSecurity:
        """``LEVEL[:VERSION]``, e.g. ``restricted`` or ``baseline:v1.25``; ValueError."""
        level_text, _, version_text = raw.strip().partition(":")
        by_value = {lv.value: lv for lv in accepted}
        level = by_value.get(level_text.strip().lower())
        if level is None:
            raise ValueError(raw)
        return cls(level, parse_version(version_text) if version_text.strip() else LATEST)

    def document(self) -> dict[str, str]:
        return {"level": self.level.value, "version": self.version}

    def __str__(self) -> str:
        return f"{self.level.value}:{self.version}"


def with_pod_security(data: Mapping[str, Any], default: PodSecurity | None = None,
                      override: PodSecurity | None = None) -> dict[str, Any]:
    """``data`` with ``magtape.pod_security.default``/``override`` set (a copy along the path).

    A level ``off`` (or ``None``) leaves the key out: absent means no PSS
    check applies there. Keys a data file put there are replaced only by a
    setting that is on.
    """
    out = dict(data)
    section: dict[str, Any] = {}
    for key, value in (("default", default), ("override", override)):
        if value is not None and value.level is not Level.OFF:
            section[key] = value.document()
    if not section:
        return out
    magtape = dict(out.get(DATA_PATH[0]) or {})
    magtape[DATA_PATH[1]] = {**dict(magtape.get(DATA_PATH[1]) or {}), **section}
    out[DATA_PATH[0]] = magtape
    return out


@dataclass(frozen=True)
class NamespacePosture:
    """What one namespace's labels say about Pod Security.

    ``magtape``: the level its MagTape labels choose, as the checks read it
    (None: no level label, the cluster default applies); ``psa``: the standard
    PSA labels it carries, by mode (``{"enforce": "restricted"}``);
    ``invalid``: a label value that is not accepted, as written.
    """

    magtape: PodSecurity | None
    psa: Mapping[str, str]
    invalid: str = ""

    @property
    def candidate(self) -> bool:
        """Carries PSA labels but no MagTape level: reported, never enforced."""
        return self.magtape is None and bool(self.psa)


def posture(labels: Mapping[str, Any] | None,
            default: PodSecurity | None = None) -> NamespacePosture:
    """Read a namespace's labels (``metadata.labels``) as the PSS checks do
    (policies/lib/pod_security.rego): a level that is not one of the three is
    read as restricted (a typo must not switch the checks off), a malformed
    version as latest, and a namespace without a version label takes the
    cluster default's version."""
    labels = labels or {}
    psa = {mode: str(labels[PSA_PREFIX + mode]) for mode in PSA_MODES
           if isinstance(labels.get(PSA_PREFIX + mode), str)}
    raw_level = labels.get(LEVEL_LABEL)
    if not isinstance(raw_level, str):
        return NamespacePosture(None, psa)
    invalid: list[str] = []
    level = {lv.value: lv for lv in (*CHOSEN_LEVELS, Level.OFF)}.get(raw_level.strip().lower())
    if level is None:
        invalid.append(f"{LEVEL_LABEL}={raw_level}")
        level = Level.RESTRICTED
    raw_version = labels.get(VERSION_LABEL)
    if isinstance(raw_version, str):
        try:
            version = parse_version(raw_version)
        except ValueError:
            invalid.append(f"{VERSION_LABEL}={raw_version}")
            version = LATEST
    else:
        version = default.version if default is not None else LATEST
    return NamespacePosture(PodSecurity(level, version), psa, ", ".join(invalid))


# The conformance tooling selects PSS failures by this range: keep it.
PSS_FIRST, PSS_LAST = 3001, 3099


def is_pss_check(errcode: str) -> bool:
    """One of the Pod Security Standards checks (MT3001-MT3099)."""
    return (len(errcode) == 6 and errcode.startswith("MT") and errcode[2:].isdigit()
            and PSS_FIRST <= int(errcode[2:]) <= PSS_LAST)
