"""Processes as Linux's ``/proc`` shows them, for tests that watch MagTape's own.

The tests of the engine's worker processes, of ``magtape serve``'s shutdown and
of ``magtape check -j`` must see processes from outside: are they there, have
they ended, how niced are they, how much CPU have they spent. They must not
ask the code under test. One reader with one set of rules: a zombie (ended,
not yet reaped) is a child but not alive, and a process that is gone has
spent no CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (``[0]`` the state,
    ``[1]`` the parent, ``[11]``/``[12]`` user/system ticks, ``[16]`` the nice
    value), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces, or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running or sleeping: neither gone nor a zombie."""
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has spent (0 when it is gone)."""
    fields = stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def _all() -> dict[int, list[str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat(int(entry.name))) is not None:
            found[int(entry.name)] = fields
    return found


def children(pid: int, command: str = "") -> dict[int, list[str]]:
    """The stat fields of each child of ``pid`` (zombies too) whose command line
    contains ``command``."""
    return {child: fields for child, fields in _all().items()
            if int(fields[1]) == pid and command in (command_line(child) or "")}


def descendants(pid: int) -> dict[int, str]:
    """Every living process below ``pid``, with its command line."""
    below: dict[int, list[int]] = {}
    for child, fields in _all().items():
        if fields[0] != "Z":
            below.setdefault(int(fields[1]), []).append(child)
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in below.get(todo.pop(), []):
            line = command_line(child)
            if line is not None:
                found[child] = line
                todo.append(child)
    return found


def mentioning(text: str) -> list[int]:
    """Every process whose command line contains ``text``."""
    return [pid for pid in _all() if text in (command_line(pid) or "")]
