"""X.509 building blocks for the webhook's TLS: a private CA, a serving certificate, checks.

The API server calls the webhook at ``https://<service>.<namespace>.svc`` and
trusts it through the ``caBundle`` of the ValidatingWebhookConfiguration.
``magtape init`` keeps a small private CA for that and issues the serving
certificate from it; this module holds the pure functions (no API calls) so
they can be used and tested on their own. Keys are ECDSA P-256: fast to
generate at pod start and accepted by the API server and nginx.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
SERVING_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)  # renew what expires within this window
CLOCK_SKEW = timedelta(minutes=5)  # notBefore is back-dated by this much


class CertificateError(ValueError):
    """PEM data that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return load_cert(self.cert_pem, "certificate")


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the serving certificate must cover; the third is the one the API server uses."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(now: datetime, validity: timedelta = CA_VALIDITY) -> KeyPair:
    """A self-signed CA allowed to sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    # The timestamp tells rotated CAs apart in a bundle (like kube's self-signed CAs).
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"magtape-ca@{int(now.timestamp())}")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_serving_cert(ca: KeyPair, dns_names: list[str], now: datetime,
                     validity: timedelta = SERVING_VALIDITY,
                     key_pem: bytes | None = None) -> KeyPair:
    """A server certificate for ``dns_names`` signed by ``ca`` (never outliving it).

    ``key_pem`` reuses an existing key: a TLS server that reads the certificate
    and the key as two files can then never pair an old certificate with a new
    key while a renewal is being rolled out.
    """
    ca_cert = ca.cert
    ca_key = load_key(ca.key_pem, "CA key")
    if not isinstance(ca_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateError("the CA key is neither ECDSA nor RSA: it cannot sign here")
    key = _reusable_key(key_pem) or ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[2]
                                                        if len(dns_names) > 2
                                                        else dns_names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _reusable_key(key_pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if not key_pem:
        return None
    try:
        key = load_key(key_pem, "key")
    except CertificateError:
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


# ------------------------------------------------------------------ reading
def load_cert(pem: bytes, what: str) -> x509.Certificate:
    certs = load_certs(pem, what)
    return certs[0]


def load_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (at least one)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError(f"{what} is not a PEM certificate") from None
    if not certs:
        raise CertificateError(f"{what} is not a PEM certificate")
    return certs


def load_key(pem: bytes, what: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{what} is not an unencrypted PEM private key") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise CertificateError(f"{what} cannot be read: {exc}") from None


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    mine = key.public_key().public_bytes(der, spki)
    return bool(cert.public_key().public_bytes(der, spki) == mine)


def dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.value.get_values_for_type(x509.DNSName)}


def covers(cert: x509.Certificate, name: str) -> bool:
    """True when ``name`` is one of the certificate's DNS SANs (wildcards honoured)."""
    name = name.lower()
    for san in dns_names(cert):
        if san == name or (san.startswith("*.") and name.split(".", 1)[-1] == san[2:]):
            return True
    return False


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def expires_within(cert: x509.Certificate, now: datetime, window: timedelta) -> bool:
    return cert.not_valid_after_utc <= now + window


def pem_bundle(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def certificate_expiry_timestamp(path: str | Path) -> float:
    """The serving certificate's notAfter as Unix time (for the expiry metric).

    Raises CertificateError when the file is missing or not a certificate.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate file {str(path)!r}: {exc}") from None
    return load_cert(pem, f"certificate file {str(path)!r}").not_valid_after_utc.timestamp()


def certificate_expiry_or_nan(path: str | Path) -> float:
    """Like :func:`certificate_expiry_timestamp`, NaN when unreadable (for a scrape-time gauge:
    ``metrics.certificate_expiry.set_function(lambda: certificate_expiry_or_nan(path))``)."""
    try:
        return certificate_expiry_timestamp(path)
    except CertificateError:
        return float("nan")


def utcnow() -> datetime:
    return datetime.now(UTC)
