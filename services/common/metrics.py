"""Prometheus metrics: every series the services export, defined in one place.

Each service serves /metrics on its *_METRICS_ADDRESS (prometheus_client's own HTTP server).
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# api
API_REQUESTS = Counter(
    "callback_api_requests", "Public API calls by method and result", ["rpc", "result"]
)
# dispatcher
TASKS = Gauge("callback_tasks", "Tasks by status (all tenants)", ["status"])
CLAIM_SECONDS = Histogram(
    "callback_claim_seconds", "Duration of one claim transaction", buckets=LATENCY_BUCKETS
)
TASKS_CLAIMED = Counter("callback_attempts_started", "Attempts started by the dispatchers")
TASKS_HELD_BY_WINDOW = Counter(
    "callback_tasks_held_by_window",
    "Due tasks held (delayed_interval) because their queue's calling window was closed",
)
CLAIMS_HELD = Counter(
    "callback_claims_held",
    "Claims of tenants with due work cut short by a tenant quota or the dialers' capacity",
    ["reason"],
)
ROWS_PURGED = Counter(
    "callback_rows_purged", "Rows deleted by the retention purge, by table", ["table"]
)
ATTEMPTS_REDIALED = Counter(
    "callback_attempts_redialed",
    "Attempts dialed again because no call was placed for them (no try spent)",
)
ATTEMPTS_ENDED = Counter("callback_attempts_ended", "Attempts ended, by outcome", ["outcome"])
QUEUE_IN_FLIGHT = Gauge(
    "callback_queue_in_flight", "Callbacks in progress per queue, at its last claim", ["queue_id"]
)
QUEUE_LIMIT = Gauge(
    "callback_queue_limit", "concurrent_task_limit per queue, at its last claim", ["queue_id"]
)
CONSUMER_PENDING = Gauge(
    "callback_nats_consumer_pending",
    "Messages not yet delivered to a JetStream consumer (lag)",
    ["consumer"],
)
# dialer
DISPATCH_LATENESS = Histogram(
    "callback_dispatch_lateness_seconds",
    "Dial time minus the time the attempt was due (start_time_utc or end of the pause)",
    buckets=LATENCY_BUCKETS,
)
CALLS = Counter("callback_calls", "Calls placed, by outcome", ["outcome"])


@functools.cache
def calls_with_outcome(outcome: str) -> Counter:
    """CALLS' child for one outcome, looked up once (labels() validates and locks on each
    call: on a busy dialer, that showed in the profile)."""
    return CALLS.labels(outcome)


CALLS_IN_PROGRESS = Gauge("callback_calls_in_progress", "Calls in progress on this dialer")
# notifier
WEBHOOK_DELIVERIES = Counter(
    "callback_webhook_attempts", "Webhook delivery attempts, by outcome", ["outcome"]
)
WEBHOOK_SECONDS = Histogram(
    "callback_webhook_seconds", "Duration of one webhook POST", buckets=LATENCY_BUCKETS
)


def serve_metrics(address: str) -> None:
    """Serve /metrics on host:port in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
