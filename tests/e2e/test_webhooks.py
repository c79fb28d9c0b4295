"""Webhooks end to end: real HTTP receivers on loopback, the real notifier."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from pytest_httpserver import HTTPServer
from scheduler.v1 import events_pb2
from scheduler.v1 import scheduler_pb2 as pb
from werkzeug import Request, Response

from deploy.local.keys import ensure_webhook_signing_key
from deploy.local.stack import ROOT, Stack
from services.common import bus
from services.notifier.signing import client_secret, verify
from tests.support.simulated_phones import BUSY_NUMBER
from tests.support.waiting import wait_for as wait_until

Handler = Callable[[Request], Response]


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def accept(server: HTTPServer, path: str, handler: Handler | None = None) -> None:
    if handler is None:
        server.expect_request(path, method="POST").respond_with_data("ok")
    else:
        server.expect_request(path, method="POST").respond_with_handler(handler)


def requests_to(server: HTTPServer) -> list[Request]:
    return [request for request, _ in server.log]


def run_task(api: httpx.Client, tenant: str, **fields: Any) -> dict[str, Any]:
    queue = api.post(f"/client/{tenant}/task_scheduler/", json={"status": "on"}).json()
    task = {"a_number": "+15550007001", "b_number": "+15550007002"} | fields
    created = api.post(
        f"/client/{tenant}/task_scheduler/{queue['id']}/tasks/", json={"tasks": [task]}
    )
    assert created.status_code == 200, created.text
    return dict(created.json()[0])


def deliveries(stack: Stack, task_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(stack.database_url) as conn:
        cursor = conn.execute(
            "SELECT id, event, status, attempts, last_error FROM webhook_deliveries "
            "WHERE task_id = %s ORDER BY seq",
            (task_id,),
        )
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def attempt_outcomes(stack: Stack, delivery_id: int) -> list[str]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT outcome FROM webhook_attempts WHERE delivery_id = %s ORDER BY attempt",
            (delivery_id,),
        ).fetchall()
    return [row[0] for row in rows]


def settled(stack: Stack, task_id: int, count: int) -> bool:
    found = deliveries(stack, task_id)
    return len(found) == count and all(d["status"] != "pending" for d in found)


def test_events_arrive_in_order_with_the_task_and_a_valid_signature(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    for event in ("before", "success", "after"):
        accept(receiver, f"/{event}")
    task = run_task(
        api,
        tenant,
        url_before=receiver.url_for("/before"),
        url_success=receiver.url_for("/success"),
        url_after=receiver.url_for("/after"),
    )
    wait_until(lambda: len(receiver.log) == 3, 30, "three webhooks")

    received = requests_to(receiver)
    assert [r.path for r in received] == ["/before", "/success", "/after"]
    bodies = [json.loads(r.get_data()) for r in received]
    assert [b["event"] for b in bodies] == ["before", "success", "after"]
    assert [b["event_id"] for b in bodies] == [
        f"{task['id']}:1:before",
        f"{task['id']}:1:success",
        f"{task['id']}:1:after",
    ]
    final = api.get(f"/client/{tenant}/task_scheduler/{task['scheduler_id']}/task/{task['id']}")
    assert bodies[2]["task"] == final.json()
    assert bodies[0]["task"]["status"] == "executed"

    secret = client_secret(ensure_webhook_signing_key(stack.settings.state_dir), tenant)
    for request in received:
        timestamp = request.headers["X-Callback-Timestamp"]
        signature = request.headers["X-Callback-Signature"]
        assert request.headers["X-Callback-Event-Id"] == json.loads(request.get_data())["event_id"]
        assert verify(secret, timestamp, request.get_data(), signature, now=time.time())
        tampered = request.get_data().replace(b'"attempt":1', b'"attempt":2')
        assert not verify(secret, timestamp, tampered, signature, now=time.time())
        wrong_client = client_secret(ensure_webhook_signing_key(stack.settings.state_dir), "x")
        assert not verify(wrong_client, timestamp, request.get_data(), signature, now=time.time())


def test_a_retried_task_sends_before_then_before_again_then_after(
    api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    for event in ("before", "again", "after"):
        accept(receiver, f"/{event}")
    run_task(
        api,
        tenant,
        a_number=BUSY_NUMBER,
        try_count=2,
        try_again_pause=0,
        url_before=receiver.url_for("/before"),
        url_before_again=receiver.url_for("/again"),
        url_after=receiver.url_for("/after"),
    )
    wait_until(lambda: len(receiver.log) == 3, 30, "three webhooks")
    bodies = [json.loads(r.get_data()) for r in requests_to(receiver)]
    assert [(b["event"], b["attempt"]) for b in bodies] == [
        ("before", 1),
        ("before_again", 2),
        ("after", 2),
    ]
    assert bodies[2]["task"]["finish_result"] == "failed"


def test_the_after_webhook_says_the_a_leg_counter_ended_the_task(
    api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    accept(receiver, "/after")
    task = run_task(
        api,
        tenant,
        a_number=BUSY_NUMBER,
        try_count=3,
        try_count_caller=1,
        try_again_pause_caller=5,
        url_after=receiver.url_for("/after"),
    )
    wait_until(lambda: len(receiver.log) == 1, 30, "the after webhook")
    [body] = [json.loads(r.get_data()) for r in requests_to(receiver)]

    assert (body["event"], body["attempt"]) == ("after", 1)
    sent = body["task"]
    assert (sent["try_count_caller"], sent["try_again_pause_caller"]) == (1, 5)
    assert sent["finish_comment"] == "A was busy (1 of 1 A-leg tries, try_count_caller)"
    final = api.get(f"/client/{tenant}/task_scheduler/{task['scheduler_id']}/task/{task['id']}")
    assert sent == final.json()


def failing_first(times: int, status: int, then: int = 200) -> Handler:
    calls = {"n": 0}
    lock = threading.Lock()

    def handle(request: Request) -> Response:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return Response("no" if n <= times else "ok", status=status if n <= times else then)

    return handle


def test_a_500_is_retried_and_then_delivered(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    accept(receiver, "/after", failing_first(1, 500))
    task = run_task(api, tenant, url_after=receiver.url_for("/after"))
    wait_until(lambda: settled(stack, task["id"], 1), 30, "the delivery to settle")
    (delivery,) = deliveries(stack, task["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    assert attempt_outcomes(stack, delivery["id"]) == ["retry", "delivered"]
    ids = {r.headers["X-Callback-Event-Id"] for r in requests_to(receiver)}
    assert ids == {f"{task['id']}:1:after"}


def test_a_timeout_is_retried_and_then_delivered(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    calls = {"n": 0}

    def slow_first(request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(2.5)  # longer than the notifier's 1 s read timeout in tests
        return Response("ok")

    accept(receiver, "/after", slow_first)
    task = run_task(api, tenant, url_after=receiver.url_for("/after"))
    wait_until(lambda: settled(stack, task["id"], 1), 30, "the delivery to settle")
    (delivery,) = deliveries(stack, task["id"])
    assert delivery["status"] == "delivered"
    assert attempt_outcomes(stack, delivery["id"]) == ["retry", "delivered"]


@pytest.mark.parametrize("status", [410, 400])
def test_other_4xx_answers_are_final(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer, status: int
) -> None:
    accept(receiver, "/after", failing_first(100, status))
    task = run_task(api, tenant, url_after=receiver.url_for("/after"))
    wait_until(lambda: settled(stack, task["id"], 1), 30, "the delivery to settle")
    (delivery,) = deliveries(stack, task["id"])
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert f"HTTP {status}" in delivery["last_error"]
    assert len(receiver.log) == 1


def admin(stack: Stack, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "services.notifier.admin", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": stack.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_exhausted_deliveries_become_dead_letters_that_can_be_replayed(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    healthy = {"yes": False}

    def sick_until_cured(request: Request) -> Response:
        return Response("ok") if healthy["yes"] else Response("down", status=503)

    accept(receiver, "/after", sick_until_cured)
    task = run_task(api, tenant, url_after=receiver.url_for("/after"))
    wait_until(lambda: settled(stack, task["id"], 1), 30, "the delivery to settle")
    (delivery,) = deliveries(stack, task["id"])
    assert (delivery["status"], delivery["attempts"]) == ("dead", 3)  # NOTIFIER_MAX_ATTEMPTS
    assert attempt_outcomes(stack, delivery["id"]) == ["retry", "retry", "dead"]

    listed = [json.loads(line) for line in admin(stack, "dead", "--client", tenant).splitlines()]
    assert [(d["id"], d["event"]) for d in listed] == [(delivery["id"], "after")]

    healthy["yes"] = True
    assert admin(stack, "replay", str(delivery["id"])).strip() == "replayed 1"
    wait_until(lambda: settled(stack, task["id"], 1), 30, "the replayed delivery")
    assert deliveries(stack, task["id"])[0]["status"] == "delivered"


def test_a_loopback_receiver_outside_the_allow_list_is_refused(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    # The tests allow 127.0.0.1/32 only: 127.0.0.2 is a loopback address like any other.
    refused = HTTPServer(host="127.0.0.2", port=0)
    refused.expect_request("/after").respond_with_data("ok")
    refused.start()
    try:
        task = run_task(api, tenant, url_after=refused.url_for("/after"))
        wait_until(lambda: settled(stack, task["id"], 1), 30, "the delivery to settle")
        (delivery,) = deliveries(stack, task["id"])
        assert delivery["status"] == "failed"
        assert "loopback" in delivery["last_error"]
        assert refused.log == []
    finally:
        refused.stop()


def test_a_hanging_receiver_delays_no_other_task(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    release = threading.Event()
    hanging = HTTPServer(host="127.0.0.1", port=0, threaded=True)

    def hang(request: Request) -> Response:
        release.wait(20)
        return Response("late")

    hanging.expect_request("/after").respond_with_handler(hang)
    hanging.start()
    accept(receiver, "/after")
    try:
        stuck = run_task(api, tenant, url_after=hanging.url_for("/after"))
        wait_until(lambda: _in_flight(stack, stuck["id"]), 30, "the receiver to hang")
        other = run_task(api, tenant, url_after=receiver.url_for("/after"))
        wait_until(lambda: len(receiver.log) == 1, 30, "the other task's webhook")
        path = f"/client/{tenant}/task_scheduler/{other['scheduler_id']}/task/{other['id']}"
        assert api.get(path).json()["finish_result"] == "success"
        assert not release.is_set()  # the first receiver was still hanging all along
    finally:
        release.set()
        hanging.stop()


def _in_flight(stack: Stack, task_id: int) -> bool:
    """The notifier has taken the delivery and is waiting on the receiver."""
    found = deliveries(stack, task_id)
    return len(found) == 1 and found[0]["attempts"] >= 1 and found[0]["status"] == "pending"


def publish_task_event(stack: Stack, event: events_pb2.TaskEvent) -> None:
    """Publish a TaskEvent as the dispatcher would (same subject and Nats-Msg-Id)."""

    async def send() -> None:
        client, jetstream = await bus.connect(
            stack.nats_url, "test-webhooks", stack.nats_login("dispatcher")
        )
        try:
            await bus.publish(
                jetstream,
                f"{bus.SUBJECT_EVENTS}.{event.event}",
                event.SerializeToString(),
                event.event_id,
            )
        finally:
            await client.close()

    asyncio.run(send())


def test_an_event_held_up_upstream_still_goes_out_before_the_later_ones(
    stack: Stack, receiver: HTTPServer, tenant: str
) -> None:
    """The notifier may get a task's `after` before its `before` (a notifier killed holding
    `before` unacknowledged: JetStream redelivers it only after its ack wait, the next events
    come at once). `after` must wait for `before`, not go out first."""
    accept(receiver, "/before")
    accept(receiver, "/after")
    task_id = 4_000_000_000 + int(time.time() * 1000) % 100_000_000  # no real task's id
    task = pb.Task(
        id=task_id,
        status="finished",
        finish_result="failed",
        url_before=receiver.url_for("/before"),
        url_after=receiver.url_for("/after"),
    )

    def event(name: str) -> events_pb2.TaskEvent:
        return events_pb2.TaskEvent(
            event_id=f"{task_id}:1:{name}",
            event=name,
            attempt=1,
            occurred_at="2030-01-01 00:00:00",
            client_id=tenant,
            url=receiver.url_for(f"/{name}"),
            task=task,
        )

    publish_task_event(stack, event("after"))
    wait_until(lambda: deliveries(stack, task_id) or None, 30, "the after event to be queued")
    publish_task_event(stack, event("before"))
    wait_until(lambda: settled(stack, task_id, 2) or None, 30, "both events to be delivered")
    assert [r.headers["X-Callback-Event"] for r in requests_to(receiver)] == ["before", "after"]
