"""Finds the cluster MagTape runs in, if any, and builds an API client for it.

Inside a pod the service-account token and CA are used; on a workstation the
kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``, read by the kubernetes
library); with neither, MagTape runs locally without a cluster (built-in
policies, no Events, no discovery) and says so once.
"""

from __future__ import annotations

import logging

from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger(__name__)


def api_client() -> ApiClient | None:
    """An ApiClient for the in-cluster config, else the kubeconfig, else None."""
    configuration = Configuration()
    configuration.retries = False  # see magtape.kube.rest.no_retries
    # One connection per open watch (namespaces, policies, exceptions, overrides, the
    # controller owners' kinds, the audit's kinds) besides the requests: the default
    # (5 per CPU) would keep opening and discarding connections on a small pod.
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 48)
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        log.info("Kubernetes API: in-cluster service account, %s", configuration.host)
        return ApiClient(configuration)
    except ConfigException:
        pass
    try:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        log.info("Kubernetes API: kubeconfig context, %s", configuration.host)
        return ApiClient(configuration)
    except (ConfigException, OSError, ValueError, TypeError):
        pass
    log.info("no Kubernetes API found (not in a pod, no kubeconfig): running without a "
             "cluster; Events, policy discovery and cluster data are off")
    return None
