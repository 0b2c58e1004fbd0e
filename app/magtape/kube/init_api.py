"""The API writes of ``magtape init``: converge Secret ``magtape-tls`` and the caBundle.

Several replicas may start at once, so every write is conditional: the
Secret is created (409: someone else did, read it again) or replaced with the
resourceVersion that was evaluated (409: read and evaluate again), through
the one helper :func:`retry_on_conflict`. A replica therefore only ever
replaces what it has itself judged unusable, and never overwrites a newer
valid certificate. While a CA is rotated, the Secret's ``ca-bundle.crt`` (and
so the caBundle) carries the new and the previous CA, so replicas still
serving the old certificate stay trusted until they pick up the new one.
What to write is decided in :mod:`magtape.kube.init_plan`.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from magtape.kube import certs
from magtape.kube.init_plan import (
    CA_BUNDLE,
    CA_CERT,
    MANAGED_BY_LABEL,
    TLS_CERT,
    TLS_KEY,
    Material,
    is_external,
    material_from,
    plan,
    secret_bytes,
    validate_external,
)
from magtape.kube.rest import SECRETS, VALIDATING_WEBHOOKS, KubeError, RawApi
from magtape.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS = 8
T = TypeVar("T")


@dataclass(frozen=True)
class InitResult:
    material: Material
    secret_changed: bool
    webhook_changed: bool
    external: bool


def retry_on_conflict(what: str, step: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run ``step`` (read, decide, conditional write) until it does not hit a 409.

    A conflict means another writer changed ``what`` between our read and our
    write: read again and decide again. Any other error is raised at once.
    """
    for _ in range(attempts):
        try:
            return step()
        except KubeError as exc:
            if not exc.conflict:
                raise
            log.info("%s was written by another replica meanwhile; re-reading", what)
    raise KubeError(409, "Conflict", f"{what} kept changing under {attempts} attempts; "
                                     "is another tool rewriting it?")


def ensure_secret(api: RawApi, settings: Settings, now: Callable[[], datetime],
                  attempts: int = ATTEMPTS) -> tuple[Material, bool, bool]:
    """Converge the Secret; returns (material, whether this run wrote it, external)."""
    ns, name = settings.identity.namespace, settings.cluster.tls_secret
    names = certs.service_dns_names(settings.cluster.service_name, ns)

    def step() -> tuple[Material, bool, bool]:
        try:
            secret: dict[str, Any] | None = api.get(SECRETS, name, ns)
        except KubeError as exc:
            if not exc.not_found:
                raise
            secret = None
        if secret is not None and is_external(secret):
            return validate_external(secret, names, now()), False, True
        data = secret_bytes(secret) if secret is not None else {}
        material = plan(data, names, now())
        if material is None:
            log.info("Secret %s/%s holds a valid certificate; nothing to do", ns, name)
            return material_from(data), False, False
        if secret is None:
            api.create(SECRETS, {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": ns, "labels": dict([MANAGED_BY_LABEL])},
                "data": material.secret_data()}, ns)
            log.info("created Secret %s/%s with a new CA and serving certificate", ns, name)
        else:
            # Replace only the version we evaluated: a concurrent writer wins
            # and we look again at what it wrote.
            secret["data"] = {**(secret.get("data") or {}), **material.secret_data()}
            api.replace(SECRETS, name, secret, ns)
            log.info("updated the certificate in Secret %s/%s", ns, name)
        return material, True, False

    return retry_on_conflict(f"Secret {ns}/{name}", step, attempts)


def ensure_ca_bundle(api: RawApi, settings: Settings, bundle: Callable[[], bytes],
                     attempts: int = ATTEMPTS) -> bool:
    """Set the caBundle of every webhook in the configuration; True when it changed.

    ``bundle`` is called before every attempt so that a replica that lost a
    race writes the newest bundle, never the one it computed earlier.
    """
    name = settings.cluster.webhook_name

    def step() -> bool:
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
        api.replace(VALIDATING_WEBHOOKS, name, config)
        log.info("patched the caBundle of %d webhook(s) in %s", len(hooks), name)
        return True

    return retry_on_conflict(f"ValidatingWebhookConfiguration {name}", step, attempts)


def init(api: RawApi, settings: Settings, now: Callable[[], datetime] = certs.utcnow,
         write_dir: str | Path | None = None) -> InitResult:
    """The whole of ``magtape init``; raises CertificateProblem or KubeError."""
    material, secret_changed, external = ensure_secret(api, settings, now)

    def latest_bundle() -> bytes:
        if external:
            return material.bundle
        try:
            data = secret_bytes(api.get(SECRETS, settings.cluster.tls_secret,
                                         settings.identity.namespace))
        except KubeError:
            return material.bundle
        return data.get(CA_BUNDLE) or material.bundle

    webhook_changed = ensure_ca_bundle(api, settings, latest_bundle)
    if write_dir is not None:
        write_files(write_dir, material)
        log.info("wrote tls.crt, tls.key and ca.crt to %s", write_dir)
    return InitResult(material, secret_changed, webhook_changed, external)




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
