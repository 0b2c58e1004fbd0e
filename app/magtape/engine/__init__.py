"""The policy-engine interfaces the core depends on, one per role.

:class:`Evaluator` answers admission requests; every engine has one.
:class:`PolicyLoader` takes policy sets and cluster data; only engines that
load their own policies have one (``embedded``: regorus in supervised worker
processes, the default). The ``opa`` engine asks an OPA sidecar whose
policies kube-mgmt loads, so it only evaluates, and the server builds no
policy store or reload machinery for it. Nothing outside ``magtape.engine``
imports regorus.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: every engine worker imports this package first
    from magtape.policy import Evaluation, LoadReport, PolicyModule
    from magtape.review import Review

# The label values of magtape_policy_engine_errors_total{reason}
# (magtape.metrics.ENGINE_ERROR_REASONS lists them for the exporter).
Reason = Literal["timeout", "crash", "memory", "unavailable", "error"]


# When the request being served must have its evaluations done by
# (time.monotonic()), set by the HTTP layer from the moment the request was
# read: the time it queued for a server thread and every evaluation it needs
# (the object, the old object, an owner) share the engine's one deadline.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("magtape_request_deadline",
                                                        default=None)


class EngineError(Exception):
    """No answer at all could be given for a request.

    ``reason`` is one of :data:`Reason`; ``detail`` says what happened in
    words an operator can act on.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __reduce__(self) -> tuple[type[EngineError], tuple[Reason, str]]:
        """Pickled with both arguments (``check -j N`` raises a shard process' error)."""
        return EngineError, (self.reason, self.detail)


def time_left(timeout: float) -> float:
    """Seconds an evaluation may take now: ``timeout``, or what is left of the request's
    deadline when that is sooner; EngineError("unavailable") when nothing is left."""
    deadline = REQUEST_DEADLINE.get()
    left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
    if left <= 0:
        raise EngineError("unavailable", f"the request waited past the {timeout:g}s evaluation "
                          "deadline before it could be evaluated (more requests at once than "
                          "the server threads and the engine workers answer)")
    return left


class Evaluator(Protocol):
    """Evaluates admission requests against the active policy set."""

    def evaluate(self, review: Review) -> Evaluation:
        """Evaluate the policies that apply to the request.

        A policy applies when the request's kind is in its
        ``policy_metadata.targets`` and its ``matches`` rule is true (or the
        policy has no ``matches`` rule). A policy that fails is reported in
        ``Evaluation.policy_errors``; the others are still decided. Raises
        :class:`EngineError` only when no answer at all can be given.
        """
        ...

    @property
    def ready(self) -> bool:
        """True while requests can be evaluated (cheap: called by every probe)."""
        ...


@runtime_checkable
class PolicyCounter(Protocol):
    """An engine whose policies something else loads (OPA, by kube-mgmt)."""

    @property
    def policies_loaded(self) -> int:
        """How many policies it holds, as last seen (cheap: read at every scrape)."""
        ...


@runtime_checkable
class PolicyLoader(Protocol):
    """Takes policy sets and replicated cluster data."""

    def load(self, modules: Sequence[PolicyModule], data: Mapping[str, Any]) -> LoadReport:
        """Vet and compile ``modules`` with base documents ``data`` and swap them in.

        Broken policies are reported in the returned report and left out; the
        others stay active. Requests in flight finish on the previous set.
        """
        ...

    def update_data(self, data: Mapping[str, Any]) -> None:
        """Replace ``data`` (e.g. replicated namespaces) without recompiling policies."""
        ...
