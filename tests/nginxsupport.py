"""Runs base/nginx.conf under the real nginx for the hardening tests.

Why it exists: the listener-abuse and TLS-scan tests both need the sidecar
exactly as deployed (only the literals the file documents are substituted),
with a CA and serving certificate made here. test_nginx_tls.py has its own,
richer stack (certificate rotation); this is the minimal one.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pki import Pki
from test_nginx_tls import (
    NGINX_CONF,
    POD_UID,
    REPO,
    SecretVolume,
    _substitute,
    free_port,
    nginx_binary,
)

CLIENT_AUTH_DIR = REPO / "components" / "apiserver-client-auth"


@contextmanager
def running_nginx(upstream_port: int, client_ca: bytes | None = None
                  ) -> Iterator[tuple[int, ssl.SSLContext]]:
    """nginx on a free loopback port proxying to ``upstream_port``; yields (port, client ctx).

    With ``client_ca``, components/apiserver-client-auth is applied as
    kustomize would: its server-level file next to nginx.conf, the CA where
    the file expects it. On exit, fails the test if nginx logged that it ran
    out of connections.
    """
    workdir = Path(tempfile.mkdtemp(prefix="magtape-nginx-hardening-"))
    cert_dir, run_dir = workdir / "tls", workdir / "tmp"
    cert_dir.mkdir()
    run_dir.mkdir()
    # As root, nginx runs as the pod's user (like test_nginx_tls.py), which
    # must be able to read what is written here.
    owner = POD_UID if os.geteuid() == 0 else None
    ca = Pki("magtape-hardening-ca")
    serving = ca.issue()
    SecretVolume(cert_dir, owner).write({"tls.crt": serving.cert, "tls.key": serving.key_pem})
    port = free_port()
    conf_dir = workdir / "conf"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    text = _substitute(NGINX_CONF.read_text(), cert_dir, run_dir, port, upstream_port)
    assert "/etc/magtape/nginx/" in text, "the include of *-server.conf files moved"
    conf.write_text(text.replace("/etc/magtape/nginx/", f"{conf_dir}/"))
    written = [workdir, cert_dir, run_dir, conf_dir, conf]
    if client_ca is not None:
        (workdir / "client-ca").mkdir()
        (workdir / "client-ca" / "ca.crt").write_bytes(client_ca)
        extra = (CLIENT_AUTH_DIR / "client-auth-server.conf").read_text()
        assert "/etc/magtape/client-ca/" in extra
        (conf_dir / "client-auth-server.conf").write_text(
            extra.replace("/etc/magtape/client-ca/", f"{workdir}/client-ca/"))
        written += [workdir / "client-ca", workdir / "client-ca" / "ca.crt",
                    conf_dir / "client-auth-server.conf"]
    user: dict[str, Any] = {}
    if owner is not None:
        for p in written:
            os.chown(p, owner, owner)
        user = {"user": owner, "group": owner, "extra_groups": []}
    log = workdir / "nginx.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([nginx_binary(), "-e", "stderr", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=sink, **user)
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                        ctx.wrap_socket(raw, server_hostname="localhost"):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not serve TLS: {log.read_text()}")
                threading.Event().wait(0.05)
        yield port, ctx
    finally:
        proc.terminate()
        proc.wait(15)
        errors = log.read_text()
        shutil.rmtree(workdir, ignore_errors=True)
    assert "worker_connections are not enough" not in errors, errors[-2000:]
