"""MagTape: a Policy-as-Code admission webhook for Kubernetes.

The package is layered web -> core -> adapters: ``web`` and ``server`` speak
HTTP, ``admission``/``decision``/``review`` hold the core logic that decides, and
``engine``, ``kube`` and ``notify`` adapt regorus/OPA, the Kubernetes API and
Slack to it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magtape")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
