"""The TLS sidecar offers only modern TLS: scanned with sslyze, as an auditor would.

Why it exists: issue 10 found nginx accepting CBC-SHA1/SHA256/SHA384,
CAMELLIA, ARIA and CCM suites and the X448/secp521r1 curves under TLS 1.2.
base/nginx.conf now lists Mozilla "intermediate" ECDHE+AEAD suites and three
curves; this test runs sslyze (a real scanner, from PyPI) against that very
file under the real nginx and accepts only: no SSL 2/3 or TLS 1.0/1.1, TLS 1.2
suites that are ECDHE key exchange with an AEAD cipher (AES-GCM or
ChaCha20-Poly1305), TLS 1.3 on, and only the curves X25519, P-256 and P-384.
The serving certificate is ECDSA P-256 (tests/pki.py), so the ECDSA suites
are the ones that can be negotiated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sslyze import (
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from e2e.cluster import free_port
from nginxsupport import running_nginx

AEAD_ECDHE_TLS12 = re.compile(r"^TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)"
                              r"|CHACHA20_POLY1305_SHA256)$")
ALLOWED_CURVES = {"X25519", "prime256v1", "secp256r1", "secp384r1"}
OLD_PROTOCOLS = {
    "ssl_2_0_cipher_suites": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "ssl_3_0_cipher_suites": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0_cipher_suites": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "tls_1_1_cipher_suites": ScanCommand.TLS_1_1_CIPHER_SUITES,
}


@pytest.fixture(scope="module")
def scan() -> Iterator[Any]:
    # Nothing is proxied during a scan: the upstream need not exist.
    with running_nginx(free_port()) as (port, _ctx):
        request = ServerScanRequest(
            server_location=ServerNetworkLocation("localhost", port, ip_address="127.0.0.1"),
            scan_commands={*OLD_PROTOCOLS.values(), ScanCommand.TLS_1_2_CIPHER_SUITES,
                           ScanCommand.TLS_1_3_CIPHER_SUITES, ScanCommand.ELLIPTIC_CURVES})
        scanner = Scanner()
        scanner.queue_scans([request])
        (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    yield result.scan_result


def _accepted(scan: Any, attribute: str) -> list[str]:
    attempt = getattr(scan, attribute)
    assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, attempt.error_trace
    return [s.cipher_suite.name for s in attempt.result.accepted_cipher_suites]


@pytest.mark.parametrize("attribute", sorted(OLD_PROTOCOLS))
def test_protocols_below_tls_1_2_are_refused(scan: Any, attribute: str) -> None:
    assert _accepted(scan, attribute) == []


def test_tls_1_2_accepts_only_ecdhe_aead_suites(scan: Any) -> None:
    accepted = _accepted(scan, "tls_1_2_cipher_suites")
    assert accepted, "TLS 1.2 must stay available (Kubernetes API servers before 1.22 use it)"
    assert [s for s in accepted if not AEAD_ECDHE_TLS12.match(s)] == []


def test_tls_1_3_is_on(scan: Any) -> None:
    accepted = _accepted(scan, "tls_1_3_cipher_suites")
    assert "TLS_AES_128_GCM_SHA256" in accepted
    assert all(("GCM" in s or "CHACHA20_POLY1305" in s) for s in accepted), accepted


def test_only_modern_curves_are_offered(scan: Any) -> None:
    attempt = scan.elliptic_curves
    assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, attempt.error_trace
    supported = {c.name for c in attempt.result.supported_curves}
    assert supported and supported <= ALLOWED_CURVES, supported
