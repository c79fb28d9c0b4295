"""Every service exposes Prometheus metrics, and the key series move when a task runs."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer

from deploy.local.stack import Stack
from tests.support.waiting import wait_for as wait_until


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(url, timeout=30)
    assert reply.status_code == 200, url
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def total_of(url: str, name: str, **labels: str) -> float:
    """A series of one process, summed over the labels not given."""
    wanted = tuple(sorted(labels.items()))
    return sum(
        number
        for (sample, sample_labels), number in scrape(url).items()
        if sample == name and all(item in sample_labels for item in wanted)
    )


def total(stack: Stack, kind: str, replicas: int, name: str, **labels: str) -> float:
    """A series summed over the replicas of one kind of service."""
    return sum(
        total_of(stack.metrics_url(kind, index), name, **labels) for index in range(replicas)
    )


def test_every_service_serves_its_key_series(stack: Stack) -> None:
    # Series without labels exist from the start; labelled ones once used (next test).
    expected = {
        ("api", stack.settings.apis): ["process_cpu_seconds_total"],
        ("dispatcher", stack.settings.dispatchers): [
            "callback_claim_seconds_count",
            "callback_attempts_started_total",
        ],
        ("dialer", stack.settings.dialers): [
            "callback_dispatch_lateness_seconds_count",
            "callback_calls_in_progress",
        ],
        ("notifier", stack.settings.notifiers): ["callback_webhook_seconds_count"],
    }
    for (kind, replicas), names in expected.items():
        for index in range(replicas):
            present = {name for name, _ in scrape(stack.metrics_url(kind, index))}
            for name in names:
                assert name in present, (kind, index, name)


def test_envoy_spreads_requests_over_every_api_process(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    assert stack.settings.apis >= 2, "the test stack runs several api processes"

    def served() -> list[float]:
        return [
            total_of(
                stack.metrics_url("api", index), "callback_api_requests_total", rpc="ListQueues"
            )
            for index in range(stack.settings.apis)
        ]

    before = served()
    for _ in range(20):
        assert api.get(f"/client/{tenant}/task_scheduler/").status_code == 200
    after = served()

    assert sum(after) - sum(before) == 20
    assert all(later > earlier for earlier, later in zip(before, after, strict=True)), after


def test_key_series_move_when_a_task_runs(stack: Stack, api: httpx.Client, tenant: str) -> None:
    a, d, n = stack.settings.apis, stack.settings.dispatchers, stack.settings.dialers
    before = {
        "started": total(stack, "dispatcher", d, "callback_attempts_started_total"),
        "connected": total(stack, "dialer", n, "callback_calls_total", outcome="connected"),
        "lateness": total(stack, "dialer", n, "callback_dispatch_lateness_seconds_count"),
        "created": total(
            stack, "api", a, "callback_api_requests_total", rpc="CreateTasks", result="ok"
        ),
        "webhooks": total(
            stack, "notifier", 1, "callback_webhook_attempts_total", outcome="delivered"
        ),
    }
    receiver = HTTPServer(host="127.0.0.1", port=0)
    receiver.expect_request("/after").respond_with_data("ok")
    receiver.start()
    try:
        queue = api.post(f"/client/{tenant}/task_scheduler/", json={"status": "on"}).json()
        task = {"a_number": "+15550008001", "b_number": "+15550008002"}
        task["url_after"] = receiver.url_for("/after")
        reply = api.post(
            f"/client/{tenant}/task_scheduler/{queue['id']}/tasks/", json={"tasks": [task]}
        )
        assert reply.status_code == 200
        wait_until(lambda: len(receiver.log) == 1, 30, "the task to finish and notify")
    finally:
        receiver.stop()

    def moved(key: str, kind: str, replicas: int, name: str, **labels: str) -> bool:
        return total(stack, kind, replicas, name, **labels) > before[key]

    wait_until(
        lambda: moved("started", "dispatcher", d, "callback_attempts_started_total"), 60, "claims"
    )
    assert moved("connected", "dialer", n, "callback_calls_total", outcome="connected")
    assert moved("lateness", "dialer", n, "callback_dispatch_lateness_seconds_count")
    assert moved("created", "api", a, "callback_api_requests_total", rpc="CreateTasks", result="ok")
    wait_until(
        lambda: moved(
            "webhooks", "notifier", 1, "callback_webhook_attempts_total", outcome="delivered"
        ),
        60,
        "the webhook counter",
    )
    wait_until(
        lambda: total(stack, "dispatcher", 1, "callback_tasks", status="finished") >= 1,
        60,
        "the tasks-by-status gauge",
    )
    lag_series = {
        dict(labels).get("consumer")
        for name, labels in scrape(stack.metrics_url("dispatcher", 0))
        if name == "callback_nats_consumer_pending"
    }
    assert {"dialer", "dispatcher-calls", "notifier"} <= lag_series
