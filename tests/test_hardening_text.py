"""The small building blocks of the forged-review defences, one property each.

Why it exists: tests/test_hardening_forged.py shows the whole works; these
pin down the pieces it relies on, so a regression names its cause: text is
escaped and bounded (magtape.text), the namespace directory follows watch
events and the webhook's opt-in rule (magtape.namespaces), label values stay
bounded without a cluster, and the one TTL cache expires and stays bounded
(magtape.ttlcache).
"""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from magtape.namespaces import OTHER, FirstSeen, NamespaceDirectory
from magtape.text import _CONTROL, LOG_LINE_MAX, clean, escape, safe_handler, truncate
from magtape.ttlcache import TtlCache

RAW_CONTROL = [chr(c) for c in (*range(0x20), *range(0x7f, 0xa0))] + ["\u2028", "\u202e"]


@given(st.text(), st.integers(min_value=30, max_value=5000))
def test_clean_text_has_no_raw_control_character_and_fits(text: str, limit: int) -> None:
    out = clean(text, limit)
    assert len(out) <= limit
    assert not any(c in out for c in RAW_CONTROL)


def test_escapes_are_readable_and_truncation_is_counted() -> None:
    assert escape("a\nb\x1b[31m\u202e") == "a\\x0ab\\x1b[31m\\u202e"
    assert truncate("x" * 100, 40) == "x" * 25 + "...(+75 chars)"
    assert truncate("short", 40) == "short"


def test_every_escaped_character_is_unprintable() -> None:
    # escape() returns printable text unscanned: that is only right while this holds.
    escaped = [chr(c) for c in range(0x110000) if _CONTROL.match(chr(c))]
    assert len(escaped) == 82
    assert not any(c.isprintable() for c in escaped)
    assert escape("plain \u00e9 text") == "plain \u00e9 text"


def test_log_lines_are_bounded_and_escaped_tracebacks_included() -> None:
    sink = io.StringIO()
    logger = logging.getLogger("magtape.test.safe")
    logger.addHandler(safe_handler(sink, "%(levelname)s %(message)s"))  # type: ignore[arg-type]
    logger.propagate = False
    try:
        logger.warning("name %s", "evil\nINFO forged" + "y" * 10_000)
        try:
            raise ValueError("bad \x1b[2J" + "z" * 10_000)
        except ValueError:
            logger.exception("failed for %r", "ns\r\n")
    finally:
        logger.handlers.clear()
    lines = sink.getvalue().splitlines()
    assert not any(line.startswith("INFO forged") for line in lines)
    assert max(len(line) for line in lines) <= LOG_LINE_MAX
    assert not any(c in line for line in lines for c in RAW_CONTROL)
    assert any(line.startswith("Traceback") for line in lines), "tracebacks keep their lines"


def _ns(name: str, opted: bool) -> dict[str, object]:
    labels = {"k8s.t-mobile.com/magtape": "enabled"} if opted else {}
    return {"metadata": {"name": name, "labels": labels}}


def test_the_directory_follows_the_watch_and_the_opt_in_rule() -> None:
    d = NamespaceDirectory()
    d.replace([_ns("team-a", True), _ns("team-b", False), _ns("kube-system", True)])
    assert d.opted_in("team-a") and not d.opted_in("team-b")
    assert d.exists("kube-system") and not d.opted_in("kube-system"), "excluded whatever labels"
    assert d.metric_label("made-up") == OTHER and d.metric_label("team-b") == "team-b"
    d.apply("MODIFIED", _ns("team-a", False))
    d.apply("ADDED", _ns("team-c", True))
    d.apply("DELETED", _ns("team-b", False))
    assert not d.opted_in("team-a") and d.opted_in("team-c") and not d.exists("team-b")
    assert d.metric_label("") == OTHER


def test_label_values_without_a_cluster_are_bounded() -> None:
    labels = FirstSeen(limit=3)
    assert [labels.metric_label(n) for n in ("a", "b", "a", "c", "d", "Bad_Name", "x" * 64)] == \
        ["a", "b", "a", "c", OTHER, OTHER, OTHER]


@pytest.mark.parametrize("max_entries", [1, 3])
def test_the_ttl_cache_expires_and_is_bounded(max_entries: int) -> None:
    now = [0.0]
    cache: TtlCache[str, int | None] = TtlCache(10, max_entries, clock=lambda: now[0])
    cache.put("a", None)
    assert cache.lookup("a") == (True, None), "None is a value, not a miss"
    for i in range(10):
        cache.put(f"k{i}", i)
    assert len(cache) == max_entries
    assert cache.lookup("k9") == (True, 9)
    now[0] = 10
    assert cache.lookup("k9") == (False, None) and len(cache) == 0
    assert cache.add_if_absent("x", 1) is False and cache.add_if_absent("x", 1) is True
