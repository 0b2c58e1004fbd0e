"""More than one HTTP process per pod (``MAGTAPE_PROCESSES``), each a whole webhook.

Why it exists: one process answers every request under one interpreter
lock, so a pod given more than one CPU could not use them
(docs/performance.md: one process is bound to ~0.4 of what the same number
of framework processes answer; two reach ~0.6). With N processes, the one
``magtape serve`` starts (the primary) starts N-1 helpers: ``magtape serve``
again, with the same arguments and environment plus
``MAGTAPE_PROCESS_INDEX``. Each helper is a webhook of its own, like a
replica: its own engine workers, watches and notifications. Every process
binds the admission port with SO_REUSEPORT, and the kernel spreads the
connections over them.

What a pod has once stays with the primary: the metrics listener (the
kubelet's probes and Prometheus' scrapes), where ``/metrics`` adds up the
helpers' counters and histograms (each helper serves its own on a loopback
port it reports to the primary) and ``/readyz`` is ready only when every
helper is; the exception expiry reminders and the audit, which helpers do
not run. A helper that exits ends the primary too (exit status 1), so the
kubelet restarts the pod whole rather than serving with a process missing;
a helper dies with the primary (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from magtape.background import Worker
from magtape.settings import Address, AuditMode, Settings

log = logging.getLogger(__name__)

INDEX_ENV = "MAGTAPE_PROCESS_INDEX"
PORT_LINE = "magtape-helper metrics-port "
PROBE_SECONDS = 1.0  # a helper's /readyz or /metrics over loopback
# Summed across processes; gauges (and _created timestamps) are the primary's.
ADDITIVE = frozenset({"counter", "histogram", "summary"})


def helper_index() -> int:
    """0 in the primary (or with one process), 1..N-1 in a helper."""
    return int(os.environ.get(INDEX_ENV, "0") or 0)


def helper_settings(settings: Settings) -> Settings:
    """A helper's settings: metrics on a loopback port of its own, no singletons."""
    return settings.with_overrides(http={"metrics_listen": Address("127.0.0.1", 0)},
                                   exceptions={"reminder_hours": 0.0},
                                   audit={"mode": AuditMode.OFF})


def announce_metrics_port(port: int) -> None:
    """Tell the primary where this helper's metrics are (its stdout is a pipe)."""
    sys.stdout.write(f"{PORT_LINE}{port}\n")
    sys.stdout.flush()


class Helpers:
    """The primary's helper processes: started, watched, asked, stopped."""

    def __init__(self, count: int, argv: Sequence[str], on_lost: Callable[[str], None]) -> None:
        self._count = count
        self._argv = list(argv)
        self._on_lost = on_lost
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ports: dict[int, int] = {}  # helper index -> metrics port
        self._streams: dict[int, int] = {}  # stdout descriptor -> helper index
        self._pending: dict[int, bytes] = {}  # stdout read before the port line
        self._watch = Worker("magtape-helpers", self._step)

    def start(self) -> None:
        for k in range(1, self._count + 1):
            proc = subprocess.Popen([sys.executable, "-m", "magtape", *self._argv],
                                    env={**os.environ, INDEX_ENV: str(k)},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            self._procs.append(proc)
            if proc.stdout is not None:
                self._streams[proc.stdout.fileno()] = k
            log.info("helper process %d started (pid %d; MAGTAPE_PROCESSES)", k, proc.pid)
        self._watch.start()

    def _step(self) -> bool:
        """Report the first helper that exits (and end); read the port lines, and
        drain whatever else a helper writes so that it never blocks."""
        for k, proc in enumerate(self._procs, start=1):
            if proc.poll() is not None:
                if not self._watch.stopping:
                    self._on_lost(f"helper process {k} (pid {proc.pid}) exited with "
                                  f"status {proc.returncode}")
                return False
        if not self._streams:
            return not self._watch.wait(0.5)
        for fd in select.select(list(self._streams), [], [], 0.5)[0]:
            chunk, k = os.read(fd, 4096), self._streams[fd]
            if not chunk:  # closed: the helper is ending, which the next step sees
                del self._streams[fd]
            elif k not in self._ports:
                *lines, self._pending[fd] = (self._pending.get(fd, b"") + chunk).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    if text.startswith(PORT_LINE):
                        self._ports[k] = int(text[len(PORT_LINE):])
        return not self._watch.stopping

    def ready(self) -> bool:
        """Every helper has started and answers its /readyz with 200."""
        if len(self._ports) < self._count:
            return False
        return all(_get(port, "/readyz") is not None for port in self._ports.values())

    def expositions(self) -> list[str]:
        """Each helper's /metrics text (a helper that does not answer is left out)."""
        texts = (_get(port, "/metrics") for port in self._ports.values())
        return [t for t in texts if t is not None]

    def terminate(self) -> None:
        """SIGTERM every helper: each drains as the primary does."""
        self._watch.request_stop()
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for them to end; SIGKILL the ones still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        self._watch.join(1.0)  # its select() must not see the pipes closed under it
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _get(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=PROBE_SECONDS) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:  # refused, timed out, or an HTTP error status (503: not ready)
        return None


class MergedRegistry:
    """The primary's registry with the helpers' counters and histograms added in.

    ``generate_latest`` reads only ``collect()``. A family every process has
    gets one set of samples whose values are the sums (``_created`` stays the
    primary's); a family only helpers have (a counter no request has touched
    in the primary yet) is taken from the first helper that has it.
    """

    def __init__(self, own: CollectorRegistry, others: Callable[[], list[str]]) -> None:
        self._own = own
        self._others = others

    def collect(self) -> Iterator[Metric]:
        families = {m.name: m for m in self._own.collect()}
        for text in self._others():
            for family in text_string_to_metric_families(text):
                if family.type not in ADDITIVE:
                    continue
                mine = families.get(family.name)
                if mine is None:
                    families[family.name] = family
                    continue
                _add(mine, family)
        yield from families.values()


def _add(into: Metric, other: Metric) -> None:
    def key(sample: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
        return sample.name, tuple(sorted(sample.labels.items()))

    index = {key(s): i for i, s in enumerate(into.samples)}
    for s in other.samples:
        if s.name.endswith("_created"):
            continue
        i = index.get(key(s))
        if i is None:
            index[key(s)] = len(into.samples)
            into.samples.append(s)
        else:
            into.samples[i] = into.samples[i]._replace(value=into.samples[i].value + s.value)
