"""``magtape init`` against the fake API: create, idempotence, renewal, races, bring-your-own."""

from __future__ import annotations

import base64
import logging
import math
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fakekube import FakeKube
from magtape.kube import certs
from magtape.kube.init import run_init
from magtape.kube.init_api import init
from magtape.kube.init_plan import CertificateProblem
from magtape.kube.rest import RawApi
from magtape.settings import IdentitySettings, Settings

NS = "magtape-system"
SETTINGS = Settings(identity=IdentitySettings(namespace=NS))
NAMES = certs.service_dns_names("magtape-svc", NS)


def _webhook_config() -> dict[str, Any]:
    hook = {"admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": "magtape-svc", "namespace": NS,
                                         "path": "/"}}}
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "magtape-webhook"},
            "webhooks": [{"name": "magtape.webhook.k8s.t-mobile.com", **hook},
                         {"name": "magtape-pods.webhook.k8s.t-mobile.com", **hook}]}


@pytest.fixture
def kube(fake_kube: FakeKube) -> FakeKube:
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                   _webhook_config())
    return fake_kube


def _secret(kube: FakeKube) -> dict[str, bytes]:
    secret = kube.get("v1", "secrets", "magtape-tls", NS)
    assert secret is not None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _ca_bundles(kube: FakeKube) -> list[bytes]:
    config = kube.get("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
                      "magtape-webhook")
    assert config is not None
    return [base64.b64decode(h["clientConfig"]["caBundle"]) for h in config["webhooks"]]


def _assert_consistent(kube: FakeKube) -> dict[str, bytes]:
    """The Secret's pair is valid for the service and every webhook trusts its CA."""
    data = _secret(kube)
    cert = certs.load_cert(data["tls.crt"], "tls.crt")
    ca = certs.load_cert(data["ca.crt"], "ca.crt")
    assert certs.key_matches(cert, certs.load_key(data["tls.key"], "tls.key"))
    assert certs.key_matches(ca, certs.load_key(data["ca.key"], "ca.key"))
    assert certs.signed_by(cert, ca)
    assert certs.dns_names(cert) == set(NAMES)
    assert certs.load_certs(data["ca-bundle.crt"], "bundle")[0] == ca
    assert _ca_bundles(kube) == [data["ca-bundle.crt"]] * 2
    return data


def _seed_generated(kube: FakeKube, ca: certs.KeyPair, serving: certs.KeyPair,
                    bundle: bytes | None = None) -> None:
    raw = {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem, "tls.crt": serving.cert_pem,
           "tls.key": serving.key_pem, "ca-bundle.crt": bundle or ca.cert_pem}
    kube.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "magtape-tls", "namespace": NS},
               "data": {k: base64.b64encode(v).decode() for k, v in raw.items()}})


def _writes(kube: FakeKube) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.requests if r.method != "GET"]


def test_first_run_creates_the_certificate_and_patches_every_webhook(kube: FakeKube) -> None:
    assert run_init(SETTINGS, kube.api_client()) == 0
    data = _assert_consistent(kube)
    assert len(certs.load_certs(data["ca-bundle.crt"], "bundle")) == 1
    cert = certs.load_cert(data["tls.crt"], "tls.crt")
    assert cert.not_valid_after_utc - certs.utcnow() > timedelta(days=360)
    secret = kube.get("v1", "secrets", "magtape-tls", NS)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"


def test_second_run_changes_nothing(kube: FakeKube) -> None:
    assert run_init(SETTINGS, kube.api_client()) == 0
    before = kube.resource_version
    kube.requests.clear()
    assert run_init(SETTINGS, kube.api_client()) == 0
    assert _writes(kube) == []
    assert kube.resource_version == before


def test_ca_near_expiry_rotates_with_a_two_ca_bundle(kube: FakeKube) -> None:
    now = certs.utcnow()
    old_ca = certs.new_ca(now - timedelta(days=30), validity=timedelta(days=40))
    old_serving = certs.new_serving_cert(old_ca, NAMES, now - timedelta(days=30))
    _seed_generated(kube, old_ca, old_serving)

    assert run_init(SETTINGS, kube.api_client()) == 0

    data = _assert_consistent(kube)
    bundle = certs.load_certs(data["ca-bundle.crt"], "bundle")
    assert [c.subject for c in bundle] == [certs.load_cert(data["ca.crt"], "ca").subject,
                                           old_ca.cert.subject]
    # A replica still serving the old certificate stays trusted meanwhile.
    assert any(certs.signed_by(old_serving.cert, ca) for ca in bundle)
    assert data["ca.crt"] != old_ca.cert_pem
    # Once the old CA has expired, the next run drops it from the bundle.
    later = now + timedelta(days=11)
    assert run_init(SETTINGS, kube.api_client(), now=lambda: later) == 0
    assert len(certs.load_certs(_secret(kube)["ca-bundle.crt"], "bundle")) == 1
    _assert_consistent(kube)


def test_serving_near_expiry_is_renewed_by_the_same_ca(kube: FakeKube) -> None:
    now = certs.utcnow()
    ca = certs.new_ca(now - timedelta(days=100))
    old = certs.new_serving_cert(ca, NAMES, now - timedelta(days=100),
                                 validity=timedelta(days=120))
    _seed_generated(kube, ca, old)
    assert run_init(SETTINGS, kube.api_client()) == 0
    data = _assert_consistent(kube)
    assert data["ca.crt"] == ca.cert_pem and data["tls.crt"] != old.cert_pem
    # The key is kept: nginx, reading tls.crt and tls.key as two files, can
    # never pair the old certificate with a new key during the rollout.
    assert data["tls.key"] == old.key_pem
    assert len(certs.load_certs(data["ca-bundle.crt"], "bundle")) == 1


def test_renamed_service_gets_a_new_certificate(kube: FakeKube) -> None:
    assert run_init(SETTINGS, kube.api_client()) == 0
    old = _secret(kube)["tls.crt"]
    renamed = SETTINGS.with_overrides(cluster={"service_name": "magtape"})
    assert run_init(renamed, kube.api_client()) == 0
    new = _secret(kube)["tls.crt"]
    assert new != old
    assert certs.covers(certs.load_cert(new, "tls.crt"), f"magtape.{NS}.svc")


def _run_concurrently(kube: FakeKube, n: int = 2) -> list[int]:
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(run_init(SETTINGS,
                                                                      kube.api_client())))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return codes


def test_concurrent_first_runs_converge_on_one_certificate(kube: FakeKube) -> None:
    # Both replicas find no Secret, both try to create it: exactly one wins.
    kube.rendezvous(2, method="POST", path="/secrets$")
    kube.rendezvous(2, method="PUT", path="/validatingwebhookconfigurations/")
    assert _run_concurrently(kube) == [0, 0]
    creates = kube.requests_matching("POST", "/secrets$")
    assert len(creates) == 2
    secret = kube.get("v1", "secrets", "magtape-tls", NS)
    assert secret is not None and secret["metadata"]["resourceVersion"]
    _assert_consistent(kube)


def test_concurrent_renewals_never_overwrite_the_newer_certificate(kube: FakeKube) -> None:
    now = certs.utcnow()
    ca = certs.new_ca(now - timedelta(days=100))
    _seed_generated(kube, ca, certs.new_serving_cert(ca, NAMES, now - timedelta(days=100),
                                                     validity=timedelta(days=110)))
    written_before = kube.resource_version
    kube.rendezvous(2, method="PUT", path="/secrets/")
    assert _run_concurrently(kube) == [0, 0]
    puts = kube.requests_matching("PUT", "/secrets/")
    assert len(puts) == 2  # both tried; the loser re-read and accepted the winner's
    secret = kube.get("v1", "secrets", "magtape-tls", NS)
    assert secret is not None
    assert int(secret["metadata"]["resourceVersion"]) == written_before + 1
    served = base64.b64decode(secret["data"]["tls.crt"])
    assert served in [base64.b64decode(p.body["data"]["tls.crt"]) for p in puts]
    _assert_consistent(kube)


def test_write_dir_gets_the_files(kube: FakeKube, tmp_path: Path) -> None:
    assert run_init(SETTINGS, kube.api_client(), write_dir=str(tmp_path / "tls")) == 0
    data = _secret(kube)
    assert (tmp_path / "tls/tls.crt").read_bytes() == data["tls.crt"]
    assert (tmp_path / "tls/tls.key").read_bytes() == data["tls.key"]
    assert (tmp_path / "tls/tls.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "tls/ca.crt").read_bytes() == data["ca-bundle.crt"]
    expiry = certs.certificate_expiry_timestamp(tmp_path / "tls/tls.crt")
    assert expiry == certs.load_cert(data["tls.crt"], "c").not_valid_after_utc.timestamp()


def test_expiry_helpers_for_the_metric(tmp_path: Path) -> None:
    assert math.isnan(certs.certificate_expiry_or_nan(tmp_path / "missing.crt"))
    (tmp_path / "bad.crt").write_text("nope")
    with pytest.raises(certs.CertificateError, match="is not a PEM certificate"):
        certs.certificate_expiry_timestamp(tmp_path / "bad.crt")


def test_cli_init_with_a_kubeconfig(kube: FakeKube, tmp_path: Path, repo: Path) -> None:
    """`magtape init` as the init container runs it, finding the API through a kubeconfig."""
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{kube.url}'}}}}]\n"
        "users: [{name: fake, user: {token: abc}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "PYTHONPATH": str(repo / "app"), "KUBECONFIG": str(tmp_path / "kubeconfig"),
           "MAGTAPE_NAMESPACE_NAME": NS}
    done = subprocess.run([sys.executable, "-m", "magtape.cli", "init", "--write-dir",
                           str(tmp_path / "tls")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "TLS ready" in done.stderr
    _assert_consistent(kube)
    assert (tmp_path / "tls/tls.crt").read_bytes() == _secret(kube)["tls.crt"]
    assert {r.authorization for r in kube.requests} == {"Bearer abc"}


def test_missing_webhook_configuration_fails_clearly(fake_kube: FakeKube,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, fake_kube.api_client()) == 1
    assert "ValidatingWebhookConfiguration magtape-webhook does not exist" in caplog.text


def test_api_errors_fail_the_run(kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    kube.fail(500, path="/secrets")
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, kube.api_client()) == 1
    assert "500 InternalError" in caplog.text


def test_no_cluster_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, None) == 1
    assert "needs the Kubernetes API" in caplog.text


# ------------------------------------------------------------ bring your own
def _external(kube: FakeKube, **pem: bytes) -> None:
    kube.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "magtape-tls", "namespace": NS,
                            "annotations": {"magtape.io/certificate-source": "external"}},
               "data": {k.replace("_", "."): base64.b64encode(v).decode()
                        for k, v in pem.items()}})


def _byo(names: list[str] = NAMES, days_ago: int = 0,
         validity: int = 90) -> tuple[certs.KeyPair, certs.KeyPair]:
    now = certs.utcnow() - timedelta(days=days_ago)
    ca = certs.new_ca(now)
    return ca, certs.new_serving_cert(ca, names, now, validity=timedelta(days=validity))


def test_external_certificate_is_only_validated_and_trusted(kube: FakeKube) -> None:
    ca, serving = _byo()
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem, ca_crt=ca.cert_pem)
    before = kube.get("v1", "secrets", "magtape-tls", NS)
    assert run_init(SETTINGS, kube.api_client()) == 0
    assert kube.get("v1", "secrets", "magtape-tls", NS) == before
    assert _ca_bundles(kube) == [ca.cert_pem] * 2


def _problem(kube: FakeKube) -> str:
    with pytest.raises(CertificateProblem) as err:
        init(RawApi(kube.api_client()), SETTINGS)
    return str(err.value)


def test_external_without_ca_is_refused(kube: FakeKube) -> None:
    _, serving = _byo()
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem)
    assert "has no ca.crt" in _problem(kube)


def test_external_without_key_is_refused(kube: FakeKube) -> None:
    ca, serving = _byo()
    _external(kube, tls_crt=serving.cert_pem, ca_crt=ca.cert_pem)
    assert "has no tls.key" in _problem(kube)


def test_external_with_garbage_certificate_is_refused(kube: FakeKube) -> None:
    ca, serving = _byo()
    _external(kube, tls_crt=b"not a cert", tls_key=serving.key_pem, ca_crt=ca.cert_pem)
    assert "tls.crt is not a PEM certificate" in _problem(kube)


def test_external_with_foreign_key_is_refused(kube: FakeKube) -> None:
    ca, serving = _byo()
    _, other = _byo()
    _external(kube, tls_crt=serving.cert_pem, tls_key=other.key_pem, ca_crt=ca.cert_pem)
    assert "tls.key is not the private key of tls.crt" in _problem(kube)


def test_external_for_another_name_is_refused(kube: FakeKube) -> None:
    ca, serving = _byo(names=["other", "other.ns", "other.ns.svc"])
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem, ca_crt=ca.cert_pem)
    message = _problem(kube)
    assert f"does not cover magtape-svc.{NS}.svc (it has other, other.ns, other.ns.svc)" in message


def test_expired_external_is_refused(kube: FakeKube) -> None:
    ca, serving = _byo(days_ago=100, validity=30)
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem, ca_crt=ca.cert_pem)
    assert "tls.crt expired at" in _problem(kube)


def test_external_not_signed_by_its_ca_is_refused(kube: FakeKube) -> None:
    _, serving = _byo()
    other_ca, _ = _byo()
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem, ca_crt=other_ca.cert_pem)
    assert "tls.crt is not signed by ca.crt" in _problem(kube)


def test_external_problem_fails_run_init_with_its_message(
        kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    _, serving = _byo()
    _external(kube, tls_crt=serving.cert_pem, tls_key=serving.key_pem)
    with caplog.at_level(logging.ERROR):
        assert run_init(SETTINGS, kube.api_client()) == 1
    assert "has no ca.crt" in caplog.text
    config = kube.get("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
                      "magtape-webhook")
    assert config is not None
    assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
