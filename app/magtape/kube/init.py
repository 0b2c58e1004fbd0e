"""``magtape init``: make the webhook's TLS trust exist and agree, from inside the cluster.

Runs as the Deployment's init container. It ensures the Secret
(``MAGTAPE_TLS_SECRET``, default ``magtape-tls``) holds a CA and a serving
certificate for ``<service>.<namespace>.svc`` and that every webhook of the
ValidatingWebhookConfiguration (``MAGTAPE_WEBHOOK_NAME``) trusts that CA.

Several replicas may start at once, so every write is conditional: the
Secret is created (409 → someone else did: re-read it) or replaced with the
resourceVersion that was evaluated (409 → re-read and evaluate again). A
replica therefore only ever replaces what it has itself judged unusable, and
never overwrites a newer valid certificate. While a CA is rotated, the
Secret's ``ca-bundle.crt`` (and so the caBundle) carries the new and the
previous CA, so replicas still serving the old certificate stay trusted until
they pick up the new one.

A Secret annotated ``magtape.io/certificate-source: external`` belongs to
someone else (cert-manager, a corporate PKI): it is only validated, each
problem with its own message, and its ``ca.crt`` goes into the caBundle.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from magtape.kube import certs
from magtape.kube.certs import CertificateError, KeyPair
from magtape.kube.rest import SECRETS, VALIDATING_WEBHOOKS, KubeError, RawApi
from magtape.settings import Settings

log = logging.getLogger(__name__)

SOURCE_ANNOTATION = "magtape.io/certificate-source"
EXTERNAL_SOURCE = "external"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "magtape-init")

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, CA_BUNDLE = (
    "ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt")
MAX_BUNDLE = 2  # the current CA and the one it replaced
ATTEMPTS = 8


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


@dataclass(frozen=True)
class InitResult:
    material: Material
    secret_changed: bool
    webhook_changed: bool
    external: bool


# ------------------------------------------------------------------ policy
def _secret_bytes(secret: dict[str, Any]) -> dict[str, bytes]:
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
    data = _secret_bytes(secret)
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


# ------------------------------------------------------------- API steps
def ensure_secret(api: RawApi, settings: Settings, now: Callable[[], datetime],
                  attempts: int = ATTEMPTS) -> tuple[Material, bool, bool]:
    """Converge the Secret; returns (material, whether this run wrote it, external)."""
    ns, name = settings.namespace_name, settings.tls_secret_name
    names = certs.service_dns_names(settings.service_name, ns)
    for _ in range(attempts):
        try:
            secret: dict[str, Any] | None = api.get(SECRETS, name, ns)
        except KubeError as exc:
            if not exc.not_found:
                raise
            secret = None
        if secret is not None and is_external(secret):
            return validate_external(secret, names, now()), False, True
        data = _secret_bytes(secret) if secret is not None else {}
        material = plan(data, names, now())
        if material is None:
            assert secret is not None
            log.info("Secret %s/%s holds a valid certificate; nothing to do", ns, name)
            return _material_from(data), False, False
        try:
            if secret is None:
                api.create(SECRETS, {
                    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": name, "namespace": ns,
                                 "labels": dict([MANAGED_BY_LABEL])},
                    "data": material.secret_data()}, ns)
                log.info("created Secret %s/%s with a new CA and serving certificate", ns, name)
            else:
                # Replace only the version we evaluated: a concurrent writer wins
                # and we look again at what it wrote.
                secret["data"] = {**(secret.get("data") or {}), **material.secret_data()}
                api.replace(SECRETS, name, secret, ns)
                log.info("updated the certificate in Secret %s/%s", ns, name)
            return material, True, False
        except KubeError as exc:
            if not exc.conflict:
                raise
            log.info("Secret %s/%s was written by another replica meanwhile; re-reading", ns, name)
    raise KubeError(409, "Conflict", f"Secret {ns}/{name} kept changing under {attempts} "
                                     "attempts; is another tool rewriting it?")


def _material_from(data: dict[str, bytes]) -> Material:
    return Material(KeyPair(data[CA_CERT], data[CA_KEY]), KeyPair(data[TLS_CERT], data[TLS_KEY]),
                    data[CA_BUNDLE])


def ensure_ca_bundle(api: RawApi, settings: Settings, bundle: Callable[[], bytes],
                     attempts: int = ATTEMPTS) -> bool:
    """Set the caBundle of every webhook in the configuration; True when it changed.

    ``bundle`` is called before every attempt so that a replica that lost a
    race writes the newest bundle, never the one it computed earlier.
    """
    name = settings.webhook_name
    for _ in range(attempts):
        try:
            config = api.get(VALIDATING_WEBHOOKS, name)
        except KubeError as exc:
            if exc.not_found:
                raise KubeError(404, "NotFound", f"ValidatingWebhookConfiguration {name} does "
                                "not exist: apply the distribution's webhook manifest (the pod "
                                "retries init until it exists)") from None
            raise
        want = base64.b64encode(bundle()).decode()
        hooks = config.get("webhooks") or []
        if not hooks:
            log.warning("ValidatingWebhookConfiguration %s has no webhooks: nothing to patch", name)
            return False
        if all((h.get("clientConfig") or {}).get("caBundle") == want for h in hooks):
            log.info("ValidatingWebhookConfiguration %s already trusts the CA", name)
            return False
        for hook in hooks:
            hook.setdefault("clientConfig", {})["caBundle"] = want
        try:
            api.replace(VALIDATING_WEBHOOKS, name, config)
        except KubeError as exc:
            if not exc.conflict:
                raise
            continue
        log.info("patched the caBundle of %d webhook(s) in %s", len(hooks), name)
        return True
    raise KubeError(409, "Conflict", f"ValidatingWebhookConfiguration {name} kept changing "
                                     f"under {attempts} attempts")


def write_files(directory: str | Path, material: Material) -> None:
    """Write tls.crt, tls.key and ca.crt atomically (for a sidecar's shared volume)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for fname, content, mode in ((TLS_CERT, material.serving.cert_pem, 0o644),
                                 (TLS_KEY, material.serving.key_pem, 0o600),
                                 (CA_CERT, material.bundle, 0o644)):
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{fname}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.chmod(tmp, mode)
            os.replace(tmp, root / fname)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def init(api: RawApi, settings: Settings, now: Callable[[], datetime] = certs.utcnow,
         write_dir: str | Path | None = None) -> InitResult:
    """The whole of ``magtape init``; raises CertificateProblem or KubeError."""
    material, secret_changed, external = ensure_secret(api, settings, now)

    def latest_bundle() -> bytes:
        if external:
            return material.bundle
        try:
            data = _secret_bytes(api.get(SECRETS, settings.tls_secret_name,
                                         settings.namespace_name))
        except KubeError:
            return material.bundle
        return data.get(CA_BUNDLE) or material.bundle

    webhook_changed = ensure_ca_bundle(api, settings, latest_bundle)
    if write_dir is not None:
        write_files(write_dir, material)
        log.info("wrote tls.crt, tls.key and ca.crt to %s", write_dir)
    return InitResult(material, secret_changed, webhook_changed, external)


def run_init(settings: Settings, api_client: ApiClient | None, *,
             write_dir: str | None = None,
             now: Callable[[], datetime] = certs.utcnow) -> int:
    """Entry point for ``magtape init``: 0 when the TLS trust is in place, 1 otherwise."""
    if api_client is None:
        log.error("magtape init needs the Kubernetes API (run it in the cluster, or with a "
                  "kubeconfig); nothing was done")
        return 1
    try:
        result = init(RawApi(api_client), settings, now, write_dir)
    except CertificateProblem as exc:
        log.error("%s", exc)
        return 1
    except KubeError as exc:
        log.error("magtape init failed: %s (check the RBAC in docs/runtime.md if this is 403)",
                  exc)
        return 1
    except (CertificateError, OSError) as exc:
        log.error("magtape init failed: %s", exc)
        return 1
    cert = result.material.serving.cert
    log.info("TLS ready: serving certificate for %s valid until %s%s",
             ", ".join(sorted(certs.dns_names(cert))), cert.not_valid_after_utc.isoformat(),
             " (external)" if result.external else "")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``magtape init`` flags (the rest comes from MAGTAPE_* variables, see docs/runtime.md)."""
    parser.add_argument("--write-dir", metavar="DIR",
                        help="also write tls.crt, tls.key and ca.crt into DIR (e.g. an emptyDir "
                             "shared with the TLS sidecar)")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """``magtape init`` as wired by the CLI."""
    from magtape.kube.client import api_client

    return run_init(settings, api_client(), write_dir=getattr(args, "write_dir", None))
