"""The admission use case: validate a review, evaluate it, decide, report.

Framework-free core (no Flask, no requests): the web layer hands it the raw
body and gets back an HTTP status and a JSON document. Engine failures follow
``MAGTAPE_ENGINE_FAILURE_POLICY``; notifications are handed to the notifier,
which queues them, so a slow Slack or API server never delays the answer.
Dry-run requests get the same decision and no side effects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from magtape.decision import Decision, Outcome, decide
from magtape.engine import EngineError, PolicyEngine
from magtape.metrics import Metrics
from magtape.notify import Notifier
from magtape.policy import DenyLevel
from magtape.review import MalformedReview, Review, build_response, parse_review
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

    def __init__(self, settings: Settings, engine: PolicyEngine, notifier: Notifier,
                 metrics: Metrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._settings = settings
        self._engine = engine
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock

    def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Return (HTTP status, JSON document) for a request body."""
        started = self._clock()
        try:
            review = parse_review(body, self._settings.keep_managed_fields)
        except MalformedReview as exc:
            log.info("rejected malformed AdmissionReview: %s", exc)
            return 400, {"error": str(exc)}
        outcome = self.evaluate(review)
        alert_sent = False if review.dry_run else self._submit(outcome)
        if outcome.decision.violations or outcome.engine_error:
            log.info("%s %s/%s in %r: %s", "allowed" if outcome.allowed else "denied",
                     review.kind, review.name, review.namespace,
                     outcome.engine_error or outcome.decision.message)
        response = build_response(review, outcome.allowed, self._warnings(outcome),
                                  self._status_message(outcome))
        self._metrics.observe_admission(review.namespace, outcome.allowed, alert_sent,
                                        outcome.evaluation, self._clock() - started)
        return 200, dict(response)

    def evaluate(self, review: Review) -> Outcome:
        level = self._settings.deny_level
        try:
            evaluation = self._engine.evaluate(review)
        except EngineError as exc:
            return self._engine_failure(review, level, str(exc))
        except Exception as exc:  # an engine bug must not become a 500
            log.exception("policy engine failed unexpectedly")
            return self._engine_failure(review, level, f"internal error: {type(exc).__name__}")
        return Outcome(review, decide(evaluation, level), level, evaluation)

    def _engine_failure(self, review: Review, level: DenyLevel, reason: str) -> Outcome:
        self._metrics.engine_errors.inc()
        fail = self._settings.engine_failure_policy is FailurePolicy.FAIL
        log.error("policy engine could not evaluate %s %s/%s (uid %s): %s; failure policy %s",
                  review.kind, review.namespace, review.name, review.uid, reason,
                  self._settings.engine_failure_policy.value)
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
        return outcome.decision.messages

    def _status_message(self, outcome: Outcome) -> str | None:
        if outcome.allowed:
            return None
        if outcome.engine_error is not None:
            return ENGINE_FAILURE_DENY.format(reason=outcome.engine_error)
        return outcome.decision.message
