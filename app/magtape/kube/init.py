"""``magtape init``: make the webhook's TLS trust exist and agree, from inside the cluster.

Runs as the Deployment's init container, as ServiceAccount ``magtape-init``
(docs/security.md). It ensures the Secret (``MAGTAPE_TLS_SECRET``, default
``magtape-tls``) holds a CA and a serving certificate for
``<service>.<namespace>.svc`` and that every webhook of the
ValidatingWebhookConfiguration (``MAGTAPE_WEBHOOK_NAME``) trusts that CA.

This module is the command (flags, exit status, messages); the decisions are
in :mod:`magtape.kube.init_plan` (pure), the API writes in
:mod:`magtape.kube.init_api`. A Secret annotated
``magtape.io/certificate-source: external`` belongs to someone else
(cert-manager, a corporate PKI): it is only validated and its ``ca.crt`` goes
into the caBundle.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from datetime import datetime

from kubernetes.client import ApiClient

from magtape.kube import certs
from magtape.kube.certs import CertificateError
from magtape.kube.init_api import init
from magtape.kube.init_plan import CertificateProblem
from magtape.kube.rest import KubeError, RawApi
from magtape.settings import Settings

log = logging.getLogger(__name__)


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
        log.error("magtape init failed: %s", explain_failure(exc))
        return 1
    except (CertificateError, OSError) as exc:
        log.error("magtape init failed: %s", exc)
        return 1
    cert = result.material.serving.cert
    log.info("TLS ready: serving certificate for %s valid until %s%s",
             ", ".join(sorted(certs.dns_names(cert))), cert.not_valid_after_utc.isoformat(),
             " (external)" if result.external else "")
    return 0


def explain_failure(exc: KubeError) -> str:
    """The error and what to do about it: unreachable, unauthenticated and forbidden
    have different fixes."""
    if exc.status == 0:
        return (f"{exc}; check the API server address and the network between this pod and "
                "it (NetworkPolicy, proxy variables), then let the pod restart")
    if exc.status == 401:
        return (f"{exc}; the API server did not accept this pod's ServiceAccount token "
                "(is automountServiceAccountToken set, or the token expired?)")
    if exc.status == 403:
        return (f"{exc}; the ServiceAccount magtape-init lacks a permission: compare its "
                "Role and ClusterRole with base/rbac-init.yaml (docs/runtime.md)")
    return str(exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``magtape init`` flags (the rest comes from MAGTAPE_* variables, see docs/runtime.md)."""
    parser.add_argument("--write-dir", metavar="DIR",
                        help="also write tls.crt, tls.key and ca.crt into DIR (e.g. an emptyDir "
                             "shared with the TLS sidecar)")


def main(settings: Settings, args: argparse.Namespace) -> int:
    """``magtape init`` as wired by the CLI."""
    from magtape.kube.client import api_client

    return run_init(settings, api_client(), write_dir=getattr(args, "write_dir", None))
