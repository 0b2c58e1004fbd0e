"""Bounding and escaping of client-controlled text before it goes anywhere.

Why it exists: every name, kind, namespace, username and policy message in a
review is chosen by whoever sent it, and a forged review can be sent by any
pod. Whatever MagTape writes from it (log lines, Events, Slack alerts,
admission responses) goes through :func:`clean` here: control characters
(newlines, ANSI escapes, NUL, C1 controls, Unicode line separators and
bidirectional overrides) are shown escaped, never raw, so no one can forge a
log line or repaint a terminal; and the length is capped, with the number of
characters left out said at the end. This module imports nothing of MagTape's,
so every layer can use it.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

# Bounds (characters) used across MagTape; docs/security.md lists them.
NAME_MAX = 253  # a Kubernetes name or namespace is at most 253 characters
MESSAGE_MAX = 1024  # one policy message (one admission warning)
LOG_MESSAGE_MAX = 2048  # the message part of one log line
LOG_LINE_MAX = 4096  # a whole log line, timestamp and logger name included

# Format (Cf) characters that reorder or hide text are escaped as well.
_BIDI_AND_HIDDEN = {"\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202b",
                    "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
                    "\ufeff"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(_BIDI_AND_HIDDEN) + "]")


def escape_char(match: re.Match[str]) -> str:
    """The matched character as a visible escape (``\\x1b``, ``\\u2028``)."""
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control or hidden formatting character written as an escape."""
    if text.isprintable():  # none of them is printable: the usual text needs no pattern scan
        return text  # (str.isprintable scans twice as fast as _CONTROL, measured)
    if keep_newlines:
        return "\n".join(_CONTROL.sub(escape_char, line) for line in text.split("\n"))
    return _CONTROL.sub(escape_char, text)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    # The marker must fit too: reserve room for the largest count it can show.
    marker = f"...(+{len(text)} chars)"
    keep = max(0, limit - len(marker))
    return f"{text[:keep]}...(+{len(text) - keep} chars)"


def cut_at_word(text: str, max_bytes: int, marker: str = "...") -> str:
    """``text`` within ``max_bytes`` UTF-8 bytes (marker included), cut after a whole word.

    Never mid-character, and mid-word only when the first word alone is too long.
    """
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max(0, max_bytes - len(marker.encode("utf-8")))
    kept = data[:room].decode("utf-8", errors="ignore")
    next_char = data[room:].decode("utf-8", errors="ignore")[:1]
    if next_char and not next_char.isspace() and " " in kept:
        kept = kept.rsplit(" ", 1)[0]
    return kept.rstrip() + marker


def fit_parts(parts: list[tuple[str, str, str]], max_bytes: int) -> str:
    """Whole parts, in order, within ``max_bytes`` UTF-8 bytes, then a count of the rest.

    ``parts`` are (separator before it, text, what it is: "failure", "fix", ...).
    Parts are never cut, except a first one that does not fit alone (cut after a
    word); what is left out is counted by what it is: `` (+2 more failures, 1 fix
    left out)``.
    """
    def size(text: str) -> int:
        return len(text.encode("utf-8"))

    whole = "".join(sep + text for sep, text, _ in parts)
    if size(whole) <= max_bytes:
        return whole
    out = ""
    kept = 0
    for sep, text, _ in parts:
        if size(out + sep + text + _left_out(parts[kept + 1:])) > max_bytes:
            break
        out, kept = out + sep + text, kept + 1
    if kept == 0 and parts:  # the first part alone is too long: cut it after a word
        marker = _left_out(parts[1:])
        return cut_at_word(parts[0][1], max_bytes - size(marker)) + marker
    return out + _left_out(parts[kept:])


def _left_out(parts: list[tuple[str, str, str]]) -> str:
    if not parts:
        return ""
    counts: dict[str, int] = {}
    for _, _, what in parts:
        counts[what] = counts.get(what, 0) + 1
    said = [f"{n} {what}{'' if n == 1 else 'es' if what.endswith(('x', 's')) else 's'}"
            for what, n in counts.items()]
    return f" (+{', '.join(said)} left out)"


def clean(text: object, limit: int = MESSAGE_MAX) -> str:
    """Escaped, then bounded: the form in which client text may be written anywhere."""
    return truncate(escape(str(text)), limit)


def clean_lines(text: str, limit: int) -> str:
    """Escaped except for newlines, each line bounded (tracebacks, multi-line alerts)."""
    return "\n".join(truncate(line, limit) for line in escape(text, keep_newlines=True)
                     .split("\n"))


class SafeFormatter(logging.Formatter):
    """A log formatter whose every line is bounded and free of raw control characters.

    The message (with its arguments) is escaped and cut to LOG_MESSAGE_MAX;
    a traceback keeps its line breaks but every character in it is escaped
    and every line is cut to LOG_LINE_MAX, since exception texts can carry
    client data too.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clean(record.message, LOG_MESSAGE_MAX)
        return truncate(super().formatMessage(record), LOG_LINE_MAX)

    def formatException(self, ei: object) -> str:
        return clean_lines(super().formatException(ei), LOG_LINE_MAX)  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return clean_lines(super().formatStack(stack_info), LOG_LINE_MAX)


def safe_handler(stream: TextIO, fmt: str) -> logging.Handler:
    """A stream handler with :class:`SafeFormatter` (``magtape`` installs it at start-up)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(fmt))
    return handler
