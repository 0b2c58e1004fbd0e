"""End-to-end tests through a real kube-apiserver (docs/e2e.md).

A package so that its modules (conftest.py included) are imported as
``e2e.<name>`` and never shadow the top-level tests' ``conftest``.
"""
