"""Certificate planning for ``magtape init``: what the TLS Secret should hold. No I/O.

Pure functions of the Secret's current bytes and the time: which CA and
serving certificate to keep, renew or create, and which previous CAs stay in
the trust bundle while a CA is rotated; and whether a bring-your-own
certificate (annotation ``magtape.io/certificate-source: external``) is
usable, each problem with its own message. :mod:`magtape.kube.init_api`
reads and writes the API; :mod:`magtape.kube.init` is the command.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from magtape.kube import certs
from magtape.kube.certs import CertificateError, KeyPair

log = logging.getLogger(__name__)

SOURCE_ANNOTATION = "magtape.io/certificate-source"
EXTERNAL_SOURCE = "external"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "magtape-init")

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, CA_BUNDLE = (
    "ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt")
MAX_BUNDLE = 2  # the current CA and the one it replaced


class CertificateProblem(Exception):
    """A bring-your-own certificate is unusable; the message says what to fix."""


@dataclass(frozen=True)
class Material:
    """What the Secret holds: CA, serving pair, and the trust bundle for the caBundle."""

    ca: KeyPair | None  # None for an external certificate (no CA key)
    serving: KeyPair
    bundle: bytes

    def secret_data(self) -> dict[str, str]:
        assert self.ca is not None
        raw = {CA_CERT: self.ca.cert_pem, CA_KEY: self.ca.key_pem,
               TLS_CERT: self.serving.cert_pem, TLS_KEY: self.serving.key_pem,
               CA_BUNDLE: self.bundle}
        return {k: base64.b64encode(v).decode() for k, v in raw.items()}


def secret_bytes(secret: dict[str, Any]) -> dict[str, bytes]:
    out = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            continue  # an undecodable key counts as missing
    return out


def plan(data: dict[str, bytes], names: list[str], now: datetime) -> Material | None:
    """The material to store, or None when ``data`` (a generated Secret's keys) is fine.

    Renews the CA when it is missing, broken or expires within 30 days; the
    serving certificate when it is missing, broken, not from the current CA,
    expires within 30 days, or no longer covers every service name.
    """
    ca = _usable_ca(data, now)
    serving = _usable_serving(data, ca, names, now) if ca else None
    previous = _bundle_certs(data)
    if ca is not None and serving is not None:
        bundle = _bundle(ca.cert, previous, now)
        if bundle == data.get(CA_BUNDLE):
            return None
        return Material(ca, serving, bundle)  # only the bundle needed pruning
    if ca is None:
        old_ca = data.get(CA_CERT)
        ca = certs.new_ca(now)
        if old_ca:
            # Keep trusting the CA being replaced while its certificates live.
            with contextlib.suppress(CertificateError):
                previous = [*certs.load_certs(old_ca, CA_CERT), *previous]
    # The serving key is kept across renewals (see certs.new_serving_cert).
    serving = certs.new_serving_cert(ca, names, now, key_pem=data.get(TLS_KEY))
    return Material(ca, serving, _bundle(ca.cert, previous, now))


def _usable_ca(data: dict[str, bytes], now: datetime) -> KeyPair | None:
    if CA_CERT not in data or CA_KEY not in data:
        return None
    try:
        cert = certs.load_cert(data[CA_CERT], CA_CERT)
        key = certs.load_key(data[CA_KEY], CA_KEY)
    except CertificateError as exc:
        log.warning("replacing the CA: %s", exc)
        return None
    if not certs.is_ca(cert) or not certs.key_matches(cert, key):
        log.warning("replacing the CA: ca.key does not match ca.crt or ca.crt is not a CA")
        return None
    if certs.expires_within(cert, now, certs.RENEW_BEFORE):
        log.info("rotating the CA: it expires at %s", cert.not_valid_after_utc.isoformat())
        return None
    return KeyPair(data[CA_CERT], data[CA_KEY])


def _usable_serving(data: dict[str, bytes], ca: KeyPair, names: list[str],
                    now: datetime) -> KeyPair | None:
    if TLS_CERT not in data or TLS_KEY not in data:
        return None
    try:
        cert = certs.load_cert(data[TLS_CERT], TLS_CERT)
        key = certs.load_key(data[TLS_KEY], TLS_KEY)
    except CertificateError as exc:
        log.warning("renewing the serving certificate: %s", exc)
        return None
    if not certs.key_matches(cert, key) or not certs.signed_by(cert, ca.cert):
        log.info("renewing the serving certificate: not the pair issued by the current CA")
        return None
    missing = [n for n in names if not certs.covers(cert, n)]
    if missing:
        log.info("renewing the serving certificate: it does not cover %s", ", ".join(missing))
        return None
    if certs.expires_within(cert, now, certs.RENEW_BEFORE):
        log.info("renewing the serving certificate: it expires at %s",
                 cert.not_valid_after_utc.isoformat())
        return None
    return KeyPair(data[TLS_CERT], data[TLS_KEY])


def _bundle_certs(data: dict[str, bytes]) -> list[Any]:
    try:
        return certs.load_certs(data[CA_BUNDLE], CA_BUNDLE) if CA_BUNDLE in data else []
    except CertificateError:
        return []


def _bundle(current: Any, previous: list[Any], now: datetime) -> bytes:
    """The current CA first, then the most recent still-valid CAs it replaced."""
    kept = [current]
    for cert in previous:
        if (cert != current and cert not in kept and certs.is_ca(cert)
                and cert.not_valid_after_utc > now):
            kept.append(cert)
    return certs.pem_bundle(kept[:MAX_BUNDLE])


# --------------------------------------------------------- bring your own
def validate_external(secret: dict[str, Any], names: list[str], now: datetime) -> Material:
    """Check a certificate MagTape does not manage; raise CertificateProblem per problem."""
    meta = secret.get("metadata", {})
    where = f"Secret {meta.get('namespace')}/{meta.get('name')} ({SOURCE_ANNOTATION}: external)"
    data = secret_bytes(secret)
    for needed, why in ((TLS_CERT, "the serving certificate"), (TLS_KEY, "its private key"),
                        (CA_CERT, "the CA that signed tls.crt, for the webhook's caBundle")):
        if not data.get(needed):
            raise CertificateProblem(f"{where} has no {needed}: add {why}")
    try:
        cert = certs.load_cert(data[TLS_CERT], TLS_CERT)
        key = certs.load_key(data[TLS_KEY], TLS_KEY)
        cas = certs.load_certs(data[CA_CERT], CA_CERT)
    except CertificateError as exc:
        raise CertificateProblem(f"{where}: {exc}") from None
    if not certs.key_matches(cert, key):
        raise CertificateProblem(f"{where}: tls.key is not the private key of tls.crt; "
                                 "store the matching pair")
    if not certs.covers(cert, names[2]):
        have = ", ".join(sorted(certs.dns_names(cert))) or "no DNS names"
        raise CertificateProblem(f"{where}: tls.crt does not cover {names[2]} (it has {have}); "
                                 f"reissue it with the DNS names {', '.join(names)}")
    if cert.not_valid_after_utc <= now:
        raise CertificateProblem(f"{where}: tls.crt expired at "
                                 f"{cert.not_valid_after_utc.isoformat()}; renew it")
    if cert.not_valid_before_utc > now:
        raise CertificateProblem(f"{where}: tls.crt is not valid before "
                                 f"{cert.not_valid_before_utc.isoformat()}; check the clocks")
    if not any(certs.signed_by(cert, ca) for ca in cas):
        raise CertificateProblem(f"{where}: tls.crt is not signed by ca.crt; put the issuing "
                                 "CA in ca.crt")
    if certs.expires_within(cert, now, certs.RENEW_BEFORE):
        log.warning("%s: tls.crt expires at %s; renew it soon", where,
                    cert.not_valid_after_utc.isoformat())
    return Material(None, KeyPair(data[TLS_CERT], data[TLS_KEY]), data[CA_CERT])


def is_external(secret: dict[str, Any]) -> bool:
    annotations = secret.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(SOURCE_ANNOTATION, "")).lower() == EXTERNAL_SOURCE




def material_from(data: dict[str, bytes]) -> Material:
    """The material of a generated Secret that :func:`plan` found fine."""
    return Material(KeyPair(data[CA_CERT], data[CA_KEY]), KeyPair(data[TLS_CERT], data[TLS_KEY]),
                    data[CA_BUNDLE])
