"""Opt-in: with components/apiserver-client-auth only a client certificate from the API
server's CA can post reviews.

Why it exists: by default any pod can post a forged review (docs/security.md
says what MagTape does about that). Where operators can configure the API
server to present a client certificate to webhooks, nginx can refuse every
other caller. This runs base/nginx.conf plus the component's file under the
real nginx, in front of a real `magtape` app, and posts with no certificate,
with one from another CA, and with the right one. The kubelet's readiness
path must stay reachable without a certificate.
"""

from __future__ import annotations

import datetime
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import review_doc
from magtape.server import Webhook
from nginxsupport import running_nginx
from pki import Pki

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "test1"},
       "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


def client_cert(ca: Pki, directory: Path) -> tuple[Path, Path]:
    """A client certificate (EKU clientAuth) as the API server's kubeconfig would hold."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    cert_file, key_file = directory / f"{ca.name}.crt", directory / f"{ca.name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def apiserver_ca() -> Pki:
    return Pki("apiserver-client-ca")


@pytest.fixture(scope="module")
def nginx(hook: Webhook, apiserver_ca: Pki) -> Iterator[tuple[int, ssl.SSLContext]]:
    with running_nginx(hook.admission_port, client_ca=apiserver_ca.pem) as running:
        yield running


def post(port: int, ctx: ssl.SSLContext, path: str = "/", method: str = "POST") -> int:
    conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=ctx)
    try:
        body = json.dumps(review_doc(POD)).encode() if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def with_cert(ctx: ssl.SSLContext, files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx.load_cert_chain(*files)
    return ctx


def test_only_the_api_servers_certificate_may_post(
        nginx: tuple[int, ssl.SSLContext], apiserver_ca: Pki, tmp_path: Path) -> None:
    port, ctx = nginx

    def context() -> ssl.SSLContext:  # trusts the serving CA, presents nothing yet
        fresh = ssl.create_default_context()
        fresh.load_verify_locations(cadata=ctx.get_ca_certs(binary_form=True)[0])
        return fresh

    assert post(port, context()) == 403, "no client certificate: refused"
    stranger = with_cert(context(), client_cert(Pki("someone-else"), tmp_path))
    assert post(port, stranger) in (400, 403), "a certificate from another CA: refused"
    apiserver = with_cert(context(), client_cert(apiserver_ca, tmp_path))
    assert post(port, apiserver) == 200
    assert post(port, context(), "/nginx-ready", "GET") == 204, "the kubelet's probe stays open"


def test_without_the_component_any_client_may_post(hook: Webhook) -> None:
    with running_nginx(hook.admission_port) as (port, ctx):
        assert post(port, ctx) == 200
