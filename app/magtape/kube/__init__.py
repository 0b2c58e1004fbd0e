"""Kubernetes adapters: API access, certificate bootstrap, policy discovery, data replication.

The core (admission, decision, engines) never imports this package; the
server wires it in when a cluster is reachable (``magtape.runtime``) and
the CLI runs ``magtape init`` from ``magtape.kube.init``. docs/runtime.md
describes the behaviour and the RBAC each feature needs.
"""
