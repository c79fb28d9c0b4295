"""The notifier's pure rules: the order of a task's webhook events, and what to do after one
delivery attempt (delivered, retry later, or give up).

Order: a task's events are delivered one at a time, in the order they happened (by attempt,
then by WebhookEvent.rank). `sequence` places an event in that order and `predecessors`
counts the events before it that have a URL; the repository's claim takes a delivery once
that many earlier deliveries of its task are queued and none of them is still pending
(notifier/repository.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.common.vocabulary import WebhookEvent

DELIVERED, RETRY, FAILED, DEAD = "delivered", "retry", "failed", "dead"

# A task's events are delivered in order: by attempt, then by the event's rank within it
# (WebhookEvent.rank); seq = attempt * 10 + rank.


def sequence(attempt: int, event: str) -> int:
    """The event's place in the order of its task's events (a WebhookEvent's value)."""
    return attempt * 10 + WebhookEvent(event).rank


def predecessors(attempt: int, event: str, with_url: frozenset[str], succeeded: bool) -> int:
    """How many events of a task come before this one and have a URL (`with_url`: the
    events whose URL the task sets), so are delivered first.

    Every attempt starts with `before` (the first) or `before_again`; `success` comes only
    in the attempt that connected, and `after` ends the task.
    """

    def starts(attempts: int) -> int:
        """URL'd start events of attempts 1..attempts."""
        if attempts < 1:
            return 0
        first = WebhookEvent.BEFORE in with_url
        return first + (attempts - 1) * (WebhookEvent.BEFORE_AGAIN in with_url)

    if event in (WebhookEvent.BEFORE, WebhookEvent.BEFORE_AGAIN):
        return starts(attempt - 1)
    if event == WebhookEvent.SUCCESS:
        return starts(attempt)
    return starts(attempt) + (succeeded and WebhookEvent.SUCCESS in with_url)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    base_seconds: float = 1.0
    cap_seconds: float = 600.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter, after attempt number `attempt` (1-based)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Verdict:
    outcome: str  # DELIVERED, RETRY, FAILED or DEAD
    reason: str
    retry_after: float | None = None


def judge(
    policy: RetryPolicy,
    *,
    attempt: int,
    age_seconds: float,
    status_code: int | None,
    error: str,
    retryable_error: bool,
) -> Verdict:
    """2xx delivered; 429, 5xx, timeouts and connection errors retried; anything else final."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict(DELIVERED, f"HTTP {status_code}")
    if status_code is not None:
        retryable = status_code == 429 or status_code >= 500
        reason = f"HTTP {status_code}"
    else:
        retryable = retryable_error
        reason = error
    if not retryable:
        return Verdict(FAILED, reason)
    if attempt >= policy.max_attempts or age_seconds >= policy.max_age_seconds:
        return Verdict(DEAD, f"{reason}; gave up after {attempt} attempts")
    return Verdict(RETRY, reason, policy.backoff(attempt))
