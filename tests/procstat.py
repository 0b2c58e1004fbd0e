"""``cpu_seconds``: the CPU time a process has used, from ``/proc``.

For tests that must show a process busy or idle (an engine worker
evaluating, a child asleep between requests) without a hook in it.
"""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float:
    """User plus system time of process ``pid``, in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
