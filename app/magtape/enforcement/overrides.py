"""Enforcement overrides: per check ``enforce`` and ``denyFrom``, per namespace deny level.

One YAML document (key ``enforcement.yaml`` of the ConfigMap
``MAGTAPE_ENFORCEMENT_CONFIGMAP``, or ``magtape check --enforcement FILE``)::

    allowExistingViolations: true        # UPDATEs keep pre-existing failures (default)
    checks:
      MT1003: {enforce: warn}            # deny | warn | off
      MT2001: {denyFrom: "2026-12-01"}   # warns "MT2001 will block from 2026-12-01" until then
    namespaces:                          # first match wins; others use MAGTAPE_DENY_LEVEL
      - selector: {matchLabels: {tier: production}}
        denyLevel: HIGH

A bad document is refused as a whole with a message naming the field; the
watcher then keeps the last good one, so a typo never loosens enforcement.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml

from magtape.enforcement.exceptions import parse_time
from magtape.enforcement.selector import LabelSelector, SelectorError, parse_selector
from magtape.policy import DenyLevel

CONFIG_KEY = "enforcement.yaml"
MAX_CHECK_RULES = 256
MAX_NAMESPACE_RULES = 64


class ConfigInvalid(ValueError):
    """The overrides document is malformed; the message names the field and what is accepted."""


class Enforce(enum.Enum):
    DENY = "deny"  # deny whatever the deny level
    WARN = "warn"  # never deny; warn (counted in magtape_would_deny_total if it would deny)
    OFF = "off"  # not reported at all


@dataclass(frozen=True)
class CheckRule:
    enforce: Enforce | None = None  # None: the deny level decides
    deny_from: datetime | None = None  # before this, a denial becomes a warning
    deny_from_text: str = ""  # as written, for the warning

    def scheduled(self, now: datetime) -> bool:
        return self.deny_from is not None and now < self.deny_from


@dataclass(frozen=True)
class NamespaceRule:
    selector: LabelSelector
    deny_level: DenyLevel


@dataclass(frozen=True)
class EnforcementConfig:
    checks: Mapping[str, CheckRule] = field(default_factory=dict)
    namespaces: tuple[NamespaceRule, ...] = ()
    allow_existing_violations: bool = True

    def deny_level_for(self, labels: Mapping[str, str] | None, default: DenyLevel) -> DenyLevel:
        for rule in self.namespaces:
            if labels is not None and rule.selector.matches(labels):
                return rule.deny_level
        return default


def parse_config(text: str, where: str = CONFIG_KEY) -> EnforcementConfig:
    """Parse the YAML document; raise :class:`ConfigInvalid` naming ``where`` and the field."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"{where}: not valid YAML: {exc}") from None
    return config_from_document(doc or {}, where)


def config_from_document(doc: Any, where: str) -> EnforcementConfig:
    if not isinstance(doc, dict):
        raise ConfigInvalid(f"{where}: expected a mapping with checks, namespaces and "
                            "allowExistingViolations")
    unknown = set(doc) - {"checks", "namespaces", "allowExistingViolations"}
    if unknown:
        raise ConfigInvalid(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; accepted "
                            "checks, namespaces, allowExistingViolations")
    allow = doc.get("allowExistingViolations", True)
    if not isinstance(allow, bool):
        raise ConfigInvalid(f"{where}: allowExistingViolations={allow!r} is invalid: accepted "
                            "true or false")
    return EnforcementConfig(checks=_checks(doc.get("checks") or {}, where),
                             namespaces=_namespaces(doc.get("namespaces") or [], where),
                             allow_existing_violations=allow)


def _checks(doc: Any, where: str) -> dict[str, CheckRule]:
    if not isinstance(doc, dict) or len(doc) > MAX_CHECK_RULES:
        raise ConfigInvalid(f"{where}: checks must map check IDs (MT1003) to rules, at most "
                            f"{MAX_CHECK_RULES}")
    rules: dict[str, CheckRule] = {}
    for check, rule in doc.items():
        path = f"{where}: checks.{check}"
        if not isinstance(rule, dict) or not set(rule) <= {"enforce", "denyFrom"}:
            raise ConfigInvalid(f"{path} must be a mapping with enforce and/or denyFrom")
        enforce = None
        if "enforce" in rule:
            # YAML 1.1 reads a bare `off` as false.
            raw = "off" if rule["enforce"] is False else str(rule["enforce"]).lower()
            try:
                enforce = Enforce(raw)
            except ValueError:
                raise ConfigInvalid(f"{path}.enforce={rule['enforce']!r} is invalid: accepted "
                                    "deny, warn, off") from None
        deny_from, text = None, ""
        if "denyFrom" in rule:
            deny_from, text = _date(rule["denyFrom"], f"{path}.denyFrom")
        rules[str(check)] = CheckRule(enforce, deny_from, text)
    return rules


def _date(value: Any, path: str) -> tuple[datetime, str]:
    """A date (midnight UTC) or an RFC 3339 time; YAML may already have parsed either."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC), moment.isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC), value.isoformat()
    if isinstance(value, str):
        try:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC), value
        except ValueError:
            parsed = parse_time(value)
            if parsed is not None:
                return parsed, value
    raise ConfigInvalid(f"{path}={value!r} is invalid: accepted a date (2026-12-01) or an "
                        "RFC 3339 time (2026-12-01T00:00:00Z)")


def _namespaces(doc: Any, where: str) -> tuple[NamespaceRule, ...]:
    if not isinstance(doc, list) or len(doc) > MAX_NAMESPACE_RULES:
        raise ConfigInvalid(f"{where}: namespaces must be a list of at most "
                            f"{MAX_NAMESPACE_RULES} rules")
    rules = []
    for i, rule in enumerate(doc):
        path = f"{where}: namespaces[{i}]"
        if not isinstance(rule, dict) or set(rule) != {"selector", "denyLevel"}:
            raise ConfigInvalid(f"{path} must have exactly selector and denyLevel")
        try:
            selector = parse_selector(rule["selector"], f"{path}.selector")
        except SelectorError as exc:
            raise ConfigInvalid(str(exc)) from None
        # YAML 1.1 reads a bare OFF as false.
        level = "OFF" if rule["denyLevel"] is False else str(rule["denyLevel"]).upper()
        if level not in DenyLevel.__members__:
            raise ConfigInvalid(f"{path}.denyLevel={rule['denyLevel']!r} is invalid: accepted "
                                + ", ".join(DenyLevel.__members__))
        rules.append(NamespaceRule(selector, DenyLevel[level]))
    return tuple(rules)
