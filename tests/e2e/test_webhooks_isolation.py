"""A slow webhook receiver holds up only itself: tenant A's receiver that does not answer
does not delay tenant B's webhooks, on a stack of its own with small in-flight caps.

Before the claim skipped full hosts, the notifier claimed A's backlog (older, so first in
line) up to its global cap, and those deliveries sat on the global slots while they waited
for the slow host's: B's webhooks went out only once the slow receiver's timeouts had worked
through A's backlog."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from deploy.local.stack import Stack
from tests.support.stacks import StateDirFactory, service_env, stack_settings
from tests.support.waiting import wait_for

TOTAL, PER_HOST, PER_TENANT = 12, 3, 6
FLOOD = 2 * TOTAL  # more of A's webhooks than the notifier has slots in all
B_TASKS = 5
# A's receiver never answers before the test ends, so each of its deliveries ends by the
# notifier's read timeout; long, so that "the first wave is still hanging" is a state the
# test can see last while B's webhooks go out (no clock is compared).
READ_TIMEOUT_SECONDS = 90


@pytest.fixture(scope="module")
def small_notifier(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("webhook-isolation")
    stack = Stack(
        stack_settings(state_dir, dispatchers=1, dialers=1, apis=1),
        log_dir=state_dir / "logs",
        service_env=service_env(
            NOTIFIER_MAX_IN_FLIGHT=str(TOTAL),
            NOTIFIER_MAX_IN_FLIGHT_PER_HOST=str(PER_HOST),
            NOTIFIER_MAX_IN_FLIGHT_PER_TENANT=str(PER_TENANT),
            NOTIFIER_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT_SECONDS),
            # A's receiver is reached as "localhost", B's as "127.0.0.1": two hosts, one
            # loopback address (and ::1, should localhost resolve to it too).
            NOTIFIER_ALLOWED_NETWORKS="127.0.0.1/32,::1/128",
            NOTIFIER_HTTP_NETWORKS="127.0.0.1/32,::1/128",
        ),
    )
    stack.start()
    yield stack
    stack.stop()


class Hanging:
    """A receiver that takes requests and answers none until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.event_ids: list[str] = []
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request("/a", method="POST").respond_with_handler(self._hang)

    def _hang(self, request: Request) -> Response:
        with self._lock:
            self.event_ids.append(json.loads(request.get_data())["event_id"])
        self.release.wait(READ_TIMEOUT_SECONDS * 3)
        return Response("late")

    def received(self) -> int:
        with self._lock:
            return len(self.event_ids)


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    receiver = Hanging()
    receiver.server.start()
    yield receiver
    receiver.release.set()
    receiver.server.clear()
    receiver.server.stop()


@pytest.fixture
def fast() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/b", method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    server.stop()


def _add_tasks(stack: Stack, tenant: str, count: int, **urls: str) -> None:
    headers = {"Authorization": f"Bearer {stack.token(tenant)}"}
    with httpx.Client(base_url=stack.rest_url, headers=headers, timeout=60) as api:
        body = {"status": "on", "concurrent_task_limit": 1000}
        queue = api.post(f"/client/{tenant}/task_scheduler/", json=body)
        assert queue.status_code == 200, queue.text
        task = {"a_number": "+15550007001", "b_number": "+15550007002"} | urls
        created = api.post(
            f"/client/{tenant}/task_scheduler/{queue.json()['id']}/tasks/",
            json={"tasks": [task] * count},
        )
        assert created.status_code == 200, created.text


def _queued(stack: Stack, tenant: str) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE client_id = %s", (tenant,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(600)
def test_a_receiver_that_does_not_answer_delays_no_other_tenants_webhooks(
    small_notifier: Stack, hanging: Hanging, fast: HTTPServer
) -> None:
    stack = small_notifier
    slow_url = f"http://localhost:{hanging.server.port}/a"
    _add_tasks(stack, "slow-a", FLOOD, url_before=slow_url)
    # A's whole backlog is queued, older than anything of B's, and the first wave of it
    # hangs in A's receiver: as many as the host may have in flight.
    wait_for(lambda: _queued(stack, "slow-a") == FLOOD, 120, "A's webhooks to be queued")
    wait_for(lambda: hanging.received() >= PER_HOST, 120, "A's receiver to hang")

    fast_url = fast.url_for("/b")
    _add_tasks(stack, "quick-b", B_TASKS, url_before=fast_url, url_after=fast_url)
    # Done when B has everything, or when A's first wave ended (its read timeout) and the
    # next one began: B's webhooks were then held up by A's receiver.
    wait_for(
        lambda: len(fast.log) == 2 * B_TASKS or hanging.received() > PER_HOST,
        READ_TIMEOUT_SECONDS * 4,
        "B's webhooks, or A's second wave",
    )
    received_by_a = list(hanging.event_ids)
    assert len(fast.log) == 2 * B_TASKS, (
        f"B got {len(fast.log)} of {2 * B_TASKS} webhooks only, while A's receiver got "
        f"{len(received_by_a)} requests: B waited behind A's slow receiver"
    )
    # A's first wave was still hanging all along: B never waited for it.
    assert len(received_by_a) == PER_HOST and not hanging.release.is_set()
    assert len(set(received_by_a)) == PER_HOST  # no delivery taken twice meanwhile
    bodies: list[dict[str, Any]] = [json.loads(r.get_data()) for r, _ in fast.log]
    for task_id in {b["task"]["id"] for b in bodies}:
        events = [b["event"] for b in bodies if b["task"]["id"] == task_id]
        assert events == ["before", "after"]  # still in order per task
