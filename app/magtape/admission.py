"""The admission use case: validate a review, evaluate it, decide, report.

Framework-free core (no Flask, no requests): the web layer hands it the raw
body and gets back an HTTP status and a JSON document. Engine failures follow
``MAGTAPE_ENGINE_FAILURE_POLICY``; notifications are handed to the notifier,
which queues them, so a slow Slack or API server never delays the answer.
Dry-run requests get the same decision and no side effects. Exceptions,
enforcement overrides and UPDATE rules are decided by the shared
:class:`~magtape.enforcement.Enforcer`; MagTapeException objects themselves
are validated here (the same endpoint serves both webhooks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from magtape.decision import Decision, Outcome
from magtape.enforcement import EnforcementState, Enforcer
from magtape.enforcement.validation import is_exception_review, refusal
from magtape.engine import EngineError, Evaluator, Reason
from magtape.metrics import Metrics
from magtape.notify import Notifier
from magtape.policy import DenyLevel, Evaluation
from magtape.review import (
    AdmissionReviewResponse,
    MalformedReview,
    Review,
    build_response,
    parse_review,
)
from magtape.settings import FailurePolicy, Settings

log = logging.getLogger(__name__)

ENGINE_FAILURE_DENY = (
    "MagTape could not evaluate the policies for this request ({reason}); "
    "the request was denied. Contact your cluster administrator."
)
ENGINE_FAILURE_ALLOW = (
    "MagTape could not evaluate the policies for this request ({reason}); "
    "it was allowed without policy checks. Contact your cluster administrator."
)


class AdmissionService:
    """Answers AdmissionReviews; one instance per app."""

    def __init__(self, settings: Settings, engine: Evaluator, notifier: Notifier,
                 metrics: Metrics, clock: Callable[[], float] = time.perf_counter,
                 enforcer: Enforcer | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock
        # Without watched state: the deny level and the UPDATE rules only.
        self.enforcer = enforcer or Enforcer(EnforcementState(), settings.deny_level)

    def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Return (HTTP status, JSON document) for a request body."""
        started = self._clock()
        try:
            review = parse_review(body, self._settings.http.keep_managed_fields)
        except MalformedReview as exc:
            log.info("rejected malformed AdmissionReview: %s", exc)
            return 400, {"error": str(exc)}
        if is_exception_review(review):
            return 200, dict(self._admit_exception(review))
        outcome = self.evaluate(review)
        alert_sent = False if review.dry_run else self._submit(outcome)
        if outcome.decision.violations or outcome.engine_error:
            log.info("%s %s/%s in %r: %s", "allowed" if outcome.allowed else "denied",
                     review.kind, review.name, review.namespace,
                     outcome.engine_error or outcome.decision.message)
        response = build_response(review, outcome.allowed, self._warnings(outcome),
                                  self._status_message(outcome))
        self._metrics.observe_admission(review.namespace, outcome.allowed, alert_sent,
                                        outcome.evaluation, self._clock() - started,
                                        exempted=outcome.decision.exempted_policies,
                                        inherited=outcome.decision.inherited_policies)
        for policy in outcome.decision.would_deny:
            self._metrics.count(self._metrics.would_deny, policy)
        return 200, dict(response)

    def evaluate(self, review: Review) -> Outcome:
        try:
            evaluation, decision = self.enforcer.decide(review, self._engine.evaluate)
        except EngineError as exc:
            return self._engine_failure(review, exc.detail, exc.reason)
        except Exception as exc:  # an engine bug must not become a 500
            log.exception("policy engine failed unexpectedly")
            return self._engine_failure(review, f"internal error: {type(exc).__name__}",
                                        "error")
        # The enforcer's decision names the level it applied; it is looked up
        # again only if it did not (the namespace's labels, once per request).
        level = decision.deny_level or self.enforcer.deny_level_for(review.namespace)
        if evaluation.policy_errors:
            decision = self._policy_errors(review, evaluation, decision, level)
        return Outcome(review, decision, level, evaluation)

    def _policy_errors(self, review: Review, evaluation: Evaluation, decision: Decision,
                       level: DenyLevel) -> Decision:
        """Count and log each failed policy; apply the failure policy to what it hid.

        A failed policy is one that could not be evaluated: under ``Fail`` it
        denies when a failure of its severity would deny at this deny level;
        the other policies' violations stand either way.
        """
        fail = self._settings.engine.failure_policy is FailurePolicy.FAIL
        namespace = self._metrics.namespaces.metric_label(review.namespace)  # bounded
        self._metrics.policy_evaluations.add(
            (err.policy, namespace, "error") for err in evaluation.policy_errors)
        for err in evaluation.policy_errors:
            log.error("policy %r (%s) failed on %s %s/%s (uid %s): %s; failure policy %s",
                      err.policy, err.errcode, review.kind, review.namespace, review.name,
                      review.uid, err.message, self._settings.engine.failure_policy.value)
        if fail and decision.allowed and any(level.denies(err.severity)
                                             for err in evaluation.policy_errors):
            return replace(decision, allowed=False)
        return decision

    def _admit_exception(self, review: Review) -> AdmissionReviewResponse:
        """Validate a MagTapeException (no policies, no notifications)."""
        why = refusal(review, max_lifetime=timedelta(days=self._settings.exceptions.max_days),
                      known_checks=self.enforcer.state.known_checks, now=self.enforcer.now())
        if why is not None:
            log.info("refused %s %s/%s: %s", review.kind, review.namespace, review.name, why)
        return build_response(review, why is None, [], why)

    def _engine_failure(self, review: Review, reason: str, label: Reason) -> Outcome:
        self._metrics.engine_errors.labels(label).inc()
        fail = self._settings.engine.failure_policy is FailurePolicy.FAIL
        log.error("policy engine could not evaluate %s %s/%s (uid %s): %s; failure policy %s",
                  review.kind, review.namespace, review.name, review.uid, reason,
                  self._settings.engine.failure_policy.value)
        level = self.enforcer.deny_level_for(review.namespace)
        return Outcome(review, Decision(allowed=not fail, violations=(), denying=()), level,
                       engine_error=reason)

    def _submit(self, outcome: Outcome) -> bool:
        if not outcome.violations:
            return False
        try:
            return self._notifier.submit(outcome)
        except Exception:  # notifications are best effort; admission is not
            log.exception("notifier failed; the admission answer is unaffected")
            return False

    def _warnings(self, outcome: Outcome) -> list[str]:
        if outcome.engine_error is not None:
            template = ENGINE_FAILURE_DENY if not outcome.allowed else ENGINE_FAILURE_ALLOW
            return [template.format(reason=outcome.engine_error)]
        return outcome.decision.messages + _policy_error_warnings(outcome)

    def _status_message(self, outcome: Outcome) -> str | None:
        if outcome.allowed:
            return None
        if outcome.engine_error is not None:
            return ENGINE_FAILURE_DENY.format(reason=outcome.engine_error)
        return "; ".join(m for m in (outcome.decision.message,
                                     *_policy_error_warnings(outcome)) if m)


POLICY_ERROR = ("MagTape could not evaluate policy {policy!r} ({errcode}): {message}. "
                "Contact your cluster administrator.")


def _policy_error_warnings(outcome: Outcome) -> list[str]:
    """One warning per policy that failed on this request, naming it."""
    errors = outcome.evaluation.policy_errors if outcome.evaluation is not None else ()
    return [POLICY_ERROR.format(policy=e.policy, errcode=e.errcode, message=e.message[:300])
            for e in errors]
