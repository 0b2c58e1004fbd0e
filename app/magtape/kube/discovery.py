"""Policy discovery from ConfigMaps, the way OPA's kube-mgmt does it.

ConfigMaps matching ``MAGTAPE_POLICY_SELECTOR`` (default
``openpolicyagent.org/policy=rego``) in ``MAGTAPE_POLICY_NAMESPACE`` (default:
MagTape's own namespace) hold the policy set: every ``*.rego`` key except
``*_test.rego`` is one module, named ``<configmap>/<key>``. Once the first list
has completed, these ConfigMaps *replace* the built-in policies rather than add
to them: the distribution ships the built-ins (and their shared library) as
ConfigMaps rendered from ``policies/``, so an operator can remove or replace a
policy by editing ConfigMaps, exactly as with kube-mgmt.

After each load the outcome is written back to every ConfigMap in the
annotation ``openpolicyagent.org/kube-mgmt-status``: ``{"status":"ok"}`` or
``{"status":"error","error":"<file>:<line>: <message>"}``. It is written only
when it differs from what the ConfigMap already says, as a merge patch of that
one annotation, so several replicas writing the same status simply agree.
Annotation-only changes (including our own writes) do not reload the engine.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from magtape.background import Backoff, Worker
from magtape.engine.sources import is_test_module
from magtape.engine.store import PolicyStore
from magtape.kube.objects import Obj, metadata
from magtape.kube.rest import CONFIGMAPS, KubeError, RawApi
from magtape.policy import LoadReport, PolicyLoadError, PolicyModule

log = logging.getLogger(__name__)

STATUS_ANNOTATION = "openpolicyagent.org/kube-mgmt-status"

Status = dict[str, str]


def origin_of(namespace: str, name: str) -> str:
    return f"configmap {namespace}/{name}"


def modules_of(configmap: Obj) -> tuple[PolicyModule, ...]:
    """The policy modules a ConfigMap contributes, in key order."""
    meta = metadata(configmap)
    name, ns = str(meta.get("name", "")), str(meta.get("namespace", ""))
    data = configmap.get("data") or {}
    return tuple(PolicyModule(origin=origin_of(ns, name), filename=f"{name}/{key}",
                              source=str(data[key]))
                 for key in sorted(data)
                 if key.endswith(".rego") and not is_test_module(key))


def format_errors(errors: tuple[PolicyLoadError, ...]) -> str:
    return "; ".join(f"{e.filename}:{e.line}: {e.message}" if e.line
                     else f"{e.filename}: {e.message}" for e in errors)


def _status_text(status: Status) -> str:
    return json.dumps(status, separators=(",", ":"))


def _parse_status(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class PolicyDiscovery:
    """Reflector handler for policy ConfigMaps; feeds the store and writes statuses."""

    def __init__(self, api: RawApi, store: PolicyStore, namespace: str,
                 backoff: Backoff | None = None) -> None:
        self._store = store
        self._namespace = namespace
        self._lock = threading.Lock()
        self._configmaps: dict[str, Obj] = {}
        self._synced = False
        self.writer = StatusWriter(api, namespace, backoff or Backoff())
        store.add_listener(self._loaded)

    # ----------------------------------------------------- reflector handler
    def replace(self, objects: list[Obj]) -> None:
        with self._lock:
            self._configmaps = {o["metadata"]["name"]: o for o in objects}
            first = not self._synced
            self._synced = True
        if first and not objects:
            log.warning("no ConfigMap in %s matches the policy selector: no policy is "
                        "enforced until one is added", self._namespace)
        self._publish()

    def apply(self, event_type: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if event_type == "DELETED":
                self._configmaps.pop(name, None)
            else:
                self._configmaps[name] = obj
        if event_type == "DELETED":
            self.writer.forget(name)
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            configmaps = sorted(self._configmaps.items())
        modules: list[PolicyModule] = []
        for name, cm in configmaps:
            annotations = cm["metadata"].get("annotations") or {}
            self.writer.observe(name, annotations.get(STATUS_ANNOTATION))
            own = modules_of(cm)
            modules.extend(own)
            if not own:  # nothing to compile: its status is known now
                has_tests = any(is_test_module(k) for k in cm.get("data") or {})
                self.writer.want(name, {"status": "ok"} if has_tests else {
                    "status": "error",
                    "error": f"{name}: no key ending in .rego; name each policy key "
                             "<something>.rego"})
        if self._store.set_modules(modules):
            log.info("policy ConfigMaps changed: reloading %d module(s) from %d ConfigMap(s)",
                     len(modules), len(configmaps))

    # --------------------------------------------------------- load results
    def _loaded(self, report: LoadReport, loaded: tuple[PolicyModule, ...]) -> None:
        """Statuses for the ConfigMaps whose current content is what was just loaded."""
        loaded_set = set(loaded)
        with self._lock:
            configmaps = list(self._configmaps.items())
        for name, cm in configmaps:
            own = modules_of(cm)
            if not own or not loaded_set.issuperset(own):
                continue  # no modules (handled above), or newer content is on its way
            errors = report.errors_for(origin_of(self._namespace, name))
            self.writer.want(name, {"status": "error", "error": format_errors(errors)}
                             if errors else {"status": "ok"})


class StatusWriter:
    """Writes the wanted status annotations that differ from the observed ones.

    One worker thread; failed writes are retried with back-off; a ConfigMap that
    disappeared is forgotten.
    """

    def __init__(self, api: RawApi, namespace: str, backoff: Backoff) -> None:
        self._api, self._namespace, self._backoff = api, namespace, backoff
        self._cond = threading.Condition()
        self._wanted: dict[str, Status] = {}
        self._observed: dict[str, Any] = {}
        self._retry_at = 0.0
        self._worker = Worker("magtape-policy-status", self._step, wake=self._wake)

    def want(self, name: str, status: Status) -> None:
        with self._cond:
            self._wanted[name] = status
            self._cond.notify_all()

    def observe(self, name: str, annotation: str | None) -> None:
        with self._cond:
            self._observed[name] = _parse_status(annotation)
            self._cond.notify_all()

    def forget(self, name: str) -> None:
        with self._cond:
            self._wanted.pop(name, None)
            self._observed.pop(name, None)

    def _unwritten(self) -> dict[str, Status]:
        """Statuses still to be written (what differs from what the ConfigMaps say)."""
        return {n: s for n, s in self._wanted.items() if self._observed.get(n) != s}

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _step(self) -> bool:
        with self._cond:
            while True:
                if self._worker.stopping:
                    return False
                pending = self._unwritten()
                wait = self._retry_at - time.monotonic()
                if pending and wait <= 0:
                    break
                self._cond.wait(wait if pending else None)
        failed = False
        for name, status in sorted(pending.items()):
            try:
                self._api.patch(CONFIGMAPS, name, {"metadata": {"annotations": {
                    STATUS_ANNOTATION: _status_text(status)}}}, self._namespace)
            except KubeError as exc:
                if exc.not_found:
                    self.forget(name)
                    continue
                failed = True
                log.warning("cannot write the policy status of ConfigMap %s/%s: %s",
                            self._namespace, name, exc)
                continue
            with self._cond:
                if self._wanted.get(name) == status:
                    self._observed[name] = status
            log.info("ConfigMap %s/%s: policy status %s", self._namespace, name,
                     status["status"])
        with self._cond:
            if failed:
                self._retry_at = time.monotonic() + self._backoff.next()
            else:
                self._backoff.reset()
                self._retry_at = 0.0
        return True
