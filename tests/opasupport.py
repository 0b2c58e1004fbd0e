"""Real OPA for the tests: `opa run --server` on a loopback port.

OPA is the reference for what a policy means (docs/policies.md), so the tests
of the OPA engine and the differential test ask the real binary that
hack/tools.sh installs (.tools/bin/opa), never a stand-in. Policies reach it
the way kube-mgmt (or MagTape) pushes them: one module per
``PUT /v1/policies/<id>``, the shared library first, and cluster data with
``PUT /v1/data/...``.

The ``opa_server`` fixture (registered as a plugin by conftest.py) starts one
server per test session with the built-in policies and the OPA entrypoint
loaded; tests that change what it holds put it back.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from e2e.cluster import free_port
from magtape.engine.sources import builtin_modules
from magtape.policy import PolicyModule

REPO = Path(__file__).resolve().parent.parent
OPA = REPO / ".tools" / "bin" / "opa"
START_TIMEOUT_SECONDS = 20.0

# One query evaluates the OPA entrypoint for a whole batch of reviews, each
# with its own replicated namespaces: a few hundred decisions cost one HTTP
# round trip instead of hundreds. (The values are bound to variables before
# `with`: OPA 1.9 gives nothing for `with input as case.review` in a
# comprehension.)
BATCH_QUERY = (
    "decisions := [d | some case in input.cases; review := case.review; "
    "namespaces := case.namespaces; "
    "d := data.magtape.main.decisions with input as review "
    "with data.kubernetes.namespaces as namespaces]"
)


class OpaError(Exception):
    """OPA refused a request; the message has OPA's own answer."""


class OpaServer:
    """One `opa run --server` process bound to 127.0.0.1."""

    def __init__(self) -> None:
        if not OPA.is_file():
            raise RuntimeError(f"{OPA} is missing: run `hack/setup.sh` (or `make install`), "
                               "which installs the OPA binary the tests use")
        self.session = requests.Session()
        # The port is picked free and handed to OPA; if another process takes it
        # in between, OPA exits at once and another port is tried.
        for _ in range(5):
            self.url = f"http://127.0.0.1:{free_port()}"
            self.proc = subprocess.Popen(
                [str(OPA), "run", "--server", "--addr", self.url.removeprefix("http://"),
                 "--log-level", "error", "--disable-telemetry"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError("`opa run --server` did not start: "
                           + (self.proc.stderr.read().decode(errors="replace")[-500:]
                              if self.proc.stderr else ""))

    def _wait_ready(self) -> bool:
        """True once GET /health answers 200; False when OPA exited first."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if self.session.get(self.url + "/health", timeout=1).status_code == 200:
                    return True
            # Waiting on the process both paces the readiness checks and
            # notices at once when OPA exits (port taken, bad flag).
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.05)
                return False
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.session.close()

    # ------------------------------------------------------------ loading
    def put_policy(self, policy_id: str, source: str) -> None:
        resp = self.session.put(f"{self.url}/v1/policies/{policy_id}", data=source.encode(),
                                headers={"Content-Type": "text/plain"}, timeout=30)
        if resp.status_code != 200:
            raise OpaError(f"OPA refused policy {policy_id}: {resp.text[:2000]}")

    def delete_policy(self, policy_id: str) -> None:
        resp = self.session.delete(f"{self.url}/v1/policies/{policy_id}", timeout=30)
        if resp.status_code not in (200, 404):
            raise OpaError(f"OPA could not delete policy {policy_id}: {resp.text[:2000]}")

    def load(self, modules: Sequence[PolicyModule]) -> None:
        """Push modules as kube-mgmt would: libraries (non-policy packages) first,
        so that policies calling library functions compile on arrival."""
        def is_policy(m: PolicyModule) -> bool:
            return "package kubernetes.admission." in m.source
        for m in sorted(modules, key=lambda m: (is_policy(m), m.filename)):
            self.put_policy(policy_id(m), m.source)

    def put_data(self, path: str, value: Any) -> None:
        resp = self.session.put(f"{self.url}/v1/data/{path}", json=value, timeout=30)
        if resp.status_code != 204:
            raise OpaError(f"OPA refused data at {path}: {resp.text[:2000]}")

    # ---------------------------------------------------------- evaluation
    def decisions_batch(self, cases: Sequence[tuple[str, str]]) -> list[Any]:
        """data.magtape.main.decisions for each (review, namespaces) case, both
        given as JSON text and sent as they are (number lexemes and escapes
        included, which parsing and re-serialising would normalise)."""
        text = ('{"query":' + json.dumps(BATCH_QUERY) + ',"input":{"cases":['
                + ",".join(f'{{"review":{review},"namespaces":{namespaces}}}'
                           for review, namespaces in cases) + "]}}")
        resp = self.session.post(f"{self.url}/v1/query", data=text.encode(),
                                 headers={"Content-Type": "application/json"}, timeout=120)
        if resp.status_code != 200:
            raise OpaError(f"OPA answered HTTP {resp.status_code}: {resp.text[:2000]}")
        (row,) = resp.json()["result"]
        decisions: list[Any] = row["decisions"]
        if len(decisions) != len(cases):
            raise OpaError(f"{len(cases)} cases gave {len(decisions)} decisions: the "
                           "entrypoint was undefined for some input")
        return decisions


def policy_id(module: PolicyModule) -> str:
    """An id in kube-mgmt's shape (<namespace>/<configmap>/<key>) naming the file:
    magtape-system/<folder>/<file>."""
    path = Path(module.filename)
    return f"magtape-system/{path.parent.name}/{path.name}"


def opa_test_results(paths: Sequence[Path], *extra: str) -> dict[str, bool]:
    """`opa test --format json`: pass/fail per test (data.<package>.<rule>)."""
    proc = subprocess.run([str(OPA), "test", "--format", "json", "--ignore", "*.yaml",
                           *extra, *map(str, paths)],
                          capture_output=True, text=True, timeout=300, check=False)
    try:
        # The report is the first JSON document on stdout (this build of OPA
        # adds an "exit N" line after it when a test fails).
        results, _ = json.JSONDecoder().raw_decode(proc.stdout)
    except ValueError:
        raise AssertionError(f"opa test gave no JSON: {proc.stdout[-1000:]}"
                             f"{proc.stderr[-1000:]}") from None
    return {f"data.{r['package'].removeprefix('data.')}.{r['name']}":
            not r.get("fail") and not r.get("error") for r in results}


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaServer]:
    """Real OPA holding the built-in policies and the OPA entrypoint."""
    server = OpaServer()
    try:
        server.load(builtin_modules())
        yield server
    finally:
        server.stop()
