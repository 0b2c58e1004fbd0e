"""MagTape: a Policy-as-Code admission webhook for Kubernetes.

The package is layered web -> core -> adapters: ``web`` and ``server`` speak
HTTP, ``admission``/``decision``/``review`` hold the core logic that decides, and
``engine``, ``kube`` and ``notify`` adapt regorus/OPA, the Kubernetes API and
Slack to it.
"""



def __getattr__(name: str) -> str:
    """``magtape.__version__``, read from the installed metadata on first use: every
    engine worker imports this package, and importing importlib.metadata is slow."""
    if name != "__version__":
        raise AttributeError(f"module 'magtape' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("magtape")
    except PackageNotFoundError:  # running from a source tree without install
        found = "0.0.0+source"
    globals()["__version__"] = found
    return found
