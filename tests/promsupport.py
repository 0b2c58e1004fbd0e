"""A real Prometheus (Debian's package, installed by hack/setup.sh) for tests.

Used by tests/test_prometheus.py (dashboards' queries against MagTape's
metrics) and by the e2e suite (tests/e2e/test_alerts_e2e.py: the alerting
rules against MagTape and a real kube-apiserver). Polls with a deadline;
never sleeps to synchronise.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from e2e.cluster import free_port


class Prometheus:
    """A real Prometheus on loopback, scraping and evaluating every second.

    ``target``: one plain-HTTP target of job ``job``; or ``scrape_configs``
    (Prometheus' own format) for several; ``rule_files`` are loaded as given.
    """

    def __init__(self, workdir: Path, target: str | None = None, *, job: str = "magtape",
                 scrape_configs: list[dict[str, Any]] | None = None,
                 rule_files: tuple[Path, ...] = (), interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: run `make install` (hack/setup.sh installs it)"
        if scrape_configs is None:
            assert target is not None
            scrape_configs = [{"job_name": job, "static_configs": [{"targets": [target]}]}]
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_for(self._ready, 60, "Prometheus to become ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: see {self.log.name}"
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        doc = resp.json()
        assert resp.status_code == 200 and doc["status"] == "success", (expr, doc)
        return list(doc["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        """The alerts in ``state`` (firing/pending), from the HTTP API."""
        resp = requests.get(self.url + "/api/v1/alerts", timeout=10)
        doc = resp.json()
        assert resp.status_code == 200 and doc["status"] == "success", doc
        return [a for a in doc["data"]["alerts"] if a["state"] == state]

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == alertname
                and labels.items() <= a["labels"].items()]

    def targets_up(self, job: str) -> bool:
        resp = requests.get(self.url + "/api/v1/targets", timeout=10).json()
        return any(t["labels"].get("job") == job and t["health"] == "up"
                   for t in resp["data"]["activeTargets"])

    @staticmethod
    def wait_for(predicate: Any, timeout: float, what: str) -> Any:
        """Poll ``predicate`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
            time.sleep(0.1)  # poll interval, not synchronisation: the deadline decides

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
