"""The image's smoke test: the engine loads, `magtape check` judges, `magtape serve` gets ready.

Why it exists: `magtape --help` loads no native library, so an image missing
one (libatomic.so.1 for rego-cpp, once) passed its build and died on first
use. This script runs as the image's last build step (and from `make
image-test` through ``buildah run``), as the image's user, with the Python
standard library only:

1. every shared object in the virtualenv resolves its libraries (``ldd``);
2. the built-in policies' vetting record applies to the image's engine;
3. ``magtape check`` denies a privileged Deployment (MT2001) at deny level LOW;
4. ``magtape serve`` answers ``/readyz`` and denies the same Deployment
   posted as an AdmissionReview, then stops cleanly on SIGTERM; again with
   two HTTP processes (``MAGTAPE_PROCESSES=2``).

Exit 0 when all hold; otherwise 1 with what failed and what to do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

VENV = Path(sys.prefix)
MAGTAPE = str(VENV / "bin" / "magtape")
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: smoke}
spec:
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
        - name: smoke
          image: busybox:1.36
          securityContext: {privileged: true}
"""


def fail(message: str) -> None:
    print(f"smoke test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check_libraries() -> None:
    missing = []
    for path in VENV.rglob("*.so*"):
        if not path.is_file():
            continue
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        missing += [f"{path.name}: {line.strip()}" for line in out.stdout.splitlines()
                    if "not found" in line]
    if missing:
        fail("shared libraries missing (install the Debian package that ships them in the "
             "Dockerfile's final stage):\n  " + "\n  ".join(missing))
    print("smoke: every native library resolves")


def check_cli() -> None:
    out = subprocess.run([MAGTAPE, "check", "--deny-level", "LOW", "--output", "json", "-"],
                         input=DEPLOYMENT, capture_output=True, text=True, timeout=120,
                         check=False)
    if out.returncode != 1 or "MT2001" not in out.stdout:
        fail(f"`magtape check` should deny MT2001 with exit 1, got {out.returncode}:\n"
             f"{out.stdout}{out.stderr}")
    print("smoke: magtape check denies a privileged Deployment (MT2001)")


def check_vetting_record() -> None:
    """The built-ins' vetting record names this image's engine release, so a
    webhook start and `magtape check` start no vetting child for them."""
    probe = ("import json\n"
             "from magtape.engine.vet import builtin_verdicts, engine_release\n"
             "from magtape.engine.semantics import BUILTINS_FILE\n"
             "listed = json.loads(BUILTINS_FILE.read_text())['engine']\n"
             "print(engine_release())\n"
             "raise SystemExit(builtin_verdicts() is None or listed != engine_release())")
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", probe], capture_output=True,
                         text=True, timeout=60, check=False)
    if out.returncode != 0:
        fail("magtape/engine/builtin_vetted.json or rego_builtins.json does not apply to "
             "this image's engine "
             f"({out.stdout.strip()}{out.stderr.strip()}): run `make policies` with the "
             "pinned engine and rebuild")
    print(f"smoke: the built-in policies' vetting record applies ({out.stdout.strip()})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_serve() -> None:
    review = subprocess.run([MAGTAPE, "review", "-"], input=DEPLOYMENT, capture_output=True,
                            text=True, timeout=60, check=True).stdout.splitlines()[0]
    env = {**os.environ, "KUBECONFIG": os.devnull}  # no cluster: built-in policies
    with tempfile.TemporaryFile() as log:
        _serve_and_review(free_port(), free_port(), env, log, review)
    print("smoke: magtape serve is ready, denies the review, stops cleanly")
    # Two HTTP processes on one port: /readyz on the metrics port waits for both.
    two = {**env, "MAGTAPE_PROCESSES": "2", "MAGTAPE_ENGINE_WORKERS": "1"}
    with tempfile.TemporaryFile() as log:
        _serve_and_review(free_port(), free_port(), two, log, review)
    print("smoke: the same with MAGTAPE_PROCESSES=2")


def _serve_and_review(port: int, metrics: int, env: dict[str, str], log: IO[bytes],
                      review: str) -> None:
    proc = subprocess.Popen([MAGTAPE, "serve", "--listen", f"127.0.0.1:{port}",
                             "--metrics-listen", f"127.0.0.1:{metrics}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        pause = threading.Event()
        while not _ready(metrics):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                fail(f"`magtape serve` did not get ready:\n{log.read().decode(errors='replace')}")
            pause.wait(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=review.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())["response"]
        if answer["allowed"] is not False or "MT2001" not in answer["status"]["message"]:
            fail(f"`magtape serve` should deny the review, answered {answer}")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    if code != 0:
        fail(f"`magtape serve` exited with {code} on SIGTERM")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    check_libraries()
    check_vetting_record()
    check_cli()
    check_serve()
    print("smoke test passed")
