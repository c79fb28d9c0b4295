"""Crashes and restarts mid-run: kill -9 of a dispatcher and a dialer, NATS restarting,
SIGTERM of the dialers during calls. Every task still finishes, no (task, attempt) is
dialed twice, and no queue goes over its concurrent_task_limit."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import httpx
import psycopg
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from deploy.local.stack import Stack
from tests.support.calls import max_overlap
from tests.support.simulated_phones import LONG_CALL_NUMBER
from tests.support.stacks import StateDirFactory, permission_violations, service_env, stack_settings
from tests.support.waiting import wait_for as wait_until

DIALERS = 2
DISPATCHERS = 2


@pytest.fixture(scope="module")
def fault_stack(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    """A stack of its own: these tests kill its parts."""
    state_dir = make_state_dir("faults")
    stack = Stack(
        stack_settings(state_dir, dispatchers=DISPATCHERS, dialers=DIALERS),
        log_dir=state_dir / "logs",
        # A short lease, so that attempts lost with a killed dialer are resolved quickly; it
        # still covers the longest call (2 x 0.3 s of ringing + 3 s), or nothing is dialed.
        service_env=service_env(DISPATCHER_ATTEMPT_LEASE_SECONDS="4", DIALER_MAX_CALL_SECONDS="3"),
    )
    stack.start()
    yield stack
    stack.stop()
    assert permission_violations(stack) == []


def rest(stack: Stack, client_id: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(client_id)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=30)


def add_queue_with_tasks(
    api: httpx.Client, client: str, limit: int, tasks: list[dict[str, object]]
) -> int:
    queue = api.post(
        f"/client/{client}/task_scheduler/", json={"status": "on", "concurrent_task_limit": limit}
    ).json()
    reply = api.post(f"/client/{client}/task_scheduler/{queue['id']}/tasks/", json={"tasks": tasks})
    assert reply.status_code == 200, reply.text
    return int(queue["id"])


def task_states(api: httpx.Client, client: str, queue_id: int) -> list[dict[str, object]]:
    tasks: list[dict[str, object]] = api.get(
        f"/client/{client}/task_scheduler/{queue_id}/task/"
    ).json()
    return tasks


def wait_until_finished(
    api: httpx.Client, client: str, queue_id: int, timeout: float, what: str
) -> None:
    wait_until(
        lambda: all(t["status"] == "finished" for t in task_states(api, client, queue_id)),
        timeout,
        what,
    )


def calls_of_queue(stack: Stack, queue_id: int) -> list[tuple[int, int, datetime, datetime, str]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT task_id, attempt, started_at, coalesce(ended_at, now()), result "
            "FROM calls WHERE queue_id = %s",
            (queue_id,),
        ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def dials_logged(stack: Stack, queue_id: int) -> Counter[tuple[int, int]]:
    """(task, attempt) of every 'dialing' line any dialer process ever logged."""
    assert stack.log_dir is not None
    dialed: Counter[tuple[int, int]] = Counter()
    for path in stack.log_dir.glob("dialer-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"action": "dial"' not in line:
                continue
            entry = json.loads(line)
            if entry["queue_id"] == queue_id:
                dialed[(entry["task_id"], entry["attempt"])] += 1
    return dialed


def test_kill_9_of_a_dispatcher_and_a_dialer_loses_nothing_and_dials_nothing_twice(
    fault_stack: Stack,
) -> None:
    limit, count = 4, 40
    with rest(fault_stack, "kill9") as api:
        tasks = [
            {"a_number": f"+1200000{i:04d}", "b_number": "+12000009999", "try_count": 3}
            | {"try_again_pause": 0}
            for i in range(count)
        ]
        queue_id = add_queue_with_tasks(api, "kill9", limit, tasks)
        wait_until(lambda: len(calls_of_queue(fault_stack, queue_id)) >= 8, 30, "calls to start")

        fault_stack.kill_child("dialer-0")
        fault_stack.kill_child("dispatcher-0")
        fault_stack.start_replica("dialer", 0)
        fault_stack.start_replica("dispatcher", 0)

        wait_until_finished(api, "kill9", queue_id, 90, "every task to finish")
        final = task_states(api, "kill9", queue_id)

    assert len(final) == count
    # Attempts lost with the killed dialer were retried: every task still connected.
    assert {t["finish_result"] for t in final} == {"success"}, final
    calls = calls_of_queue(fault_stack, queue_id)
    dialed = dials_logged(fault_stack, queue_id)
    assert max(dialed.values()) == 1, [k for k, n in dialed.items() if n > 1]
    # Every call placed is on record...
    assert set(dialed) <= {(task, attempt) for task, attempt, *_ in calls}
    # ...and every try spent placed a call, but for one the killed dialer had marked dialed
    # and not yet handed to its phones (the commit's round trip): given up as lost.
    unrung = [c for c in calls if (c[0], c[1]) not in dialed]
    assert all(result == "lost" for *_, result in unrung), unrung
    assert max_overlap([(start, end) for _, _, start, end, _ in calls]) <= limit


def test_nats_restart_mid_run_loses_nothing(fault_stack: Stack) -> None:
    count = 20
    with rest(fault_stack, "natsdown") as api:
        tasks = [
            {"a_number": f"+1300000{i:04d}", "b_number": "+13000009999", "try_count": 2}
            for i in range(count)
        ]
        queue_id = add_queue_with_tasks(api, "natsdown", 3, tasks)
        wait_until(lambda: len(calls_of_queue(fault_stack, queue_id)) >= 3, 30, "calls to start")
        fault_stack.stop_child("nats")
        time.sleep(1.0)  # NATS stays down for a while, as in a real outage
        fault_stack.start_nats()
        wait_until_finished(
            api, "natsdown", queue_id, 90, "every task to finish after NATS came back"
        )
        final = task_states(api, "natsdown", queue_id)
    assert len(final) == count
    assert {t["finish_result"] for t in final} == {"success"}, final
    dialed = dials_logged(fault_stack, queue_id)
    assert max(dialed.values()) == 1


def test_sigterm_lets_the_dialers_finish_calls_in_progress(fault_stack: Stack) -> None:
    with rest(fault_stack, "sigterm") as api:
        # Both phones talk long (a call lasts as long as the shorter talker).
        long_call: dict[str, object] = {"a_number": LONG_CALL_NUMBER, "b_number": LONG_CALL_NUMBER}
        tasks = [long_call, long_call]
        queue_id = add_queue_with_tasks(api, "sigterm", 2, tasks)
        wait_until(lambda: len(calls_of_queue(fault_stack, queue_id)) == 2, 30, "both calls")
        for index in range(DIALERS):
            fault_stack.stop_child(f"dialer-{index}")  # SIGTERM, waits for the exit
        results = [result for *_, result in calls_of_queue(fault_stack, queue_id)]
        assert results == ["connected", "connected"]
        for index in range(DIALERS):
            fault_stack.start_replica("dialer", index)
        wait_until_finished(api, "sigterm", queue_id, 30, "both tasks to finish")
        final = task_states(api, "sigterm", queue_id)
    assert [t["finish_result"] for t in final] == ["success", "success"]


def test_kill_9_of_the_notifier_mid_delivery_loses_no_event(fault_stack: Stack) -> None:
    first_seen = threading.Event()
    received: list[str] = []

    def hang_first(request: Request) -> Response:
        received.append(request.headers["X-Callback-Event-Id"])
        if len(received) == 1:
            first_seen.set()
            time.sleep(1.0)  # the notifier is killed while it waits for this answer
        return Response("ok")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/after").respond_with_handler(hang_first)
    server.start()
    try:
        with rest(fault_stack, "hooks") as api:
            task: dict[str, object] = {"a_number": "+15000000001", "b_number": "+15000000002"}
            task["url_after"] = server.url_for("/after")
            queue_id = add_queue_with_tasks(api, "hooks", 1, [task])
            assert first_seen.wait(30), "the webhook never arrived"
            fault_stack.kill_child("notifier-0")
            fault_stack.start_replica("notifier", 0)
            # Delivered again after the lease of the killed attempt: same event id.
            wait_until(lambda: len(received) >= 2, 60, "the webhook to be delivered again")
            (task_row,) = task_states(api, "hooks", queue_id)
    finally:
        server.stop()
    assert set(received) == {f"{task_row['id']}:1:after"}


def test_a_dial_request_that_comes_too_late_for_its_lease_spends_no_try(
    fault_stack: Stack,
) -> None:
    """Dialers down while an attempt is claimed: when they are back, less of the attempt's
    lease is left than the longest call needs. Dialing it then would let the lease expire
    mid-call and the task be dialed again while the first call still runs: over the
    queue's limit, the same person called twice at once. The request is not dialed; no
    phone rang, so it spends no try: with try_count 1 the task still gets its one call,
    as the same attempt with a new call_uuid."""
    for index in range(DIALERS):
        fault_stack.kill_child(f"dialer-{index}")
    try:
        with rest(fault_stack, "late") as api:
            task = {"a_number": "+17000000001", "b_number": "+17000000002", "try_count": 1}
            queue_id = add_queue_with_tasks(api, "late", 1, [task])
            with psycopg.connect(fault_stack.database_url) as conn:

                def lease_short() -> str | None:
                    """The claimed attempt's call_uuid, once it has less lease left than
                    the longest call (2 x 0.3 s of ringing + 3 s; the lease is 4 s)."""
                    row = conn.execute(
                        "SELECT cdr FROM tasks WHERE queue_id = %s AND status = 'executed' "
                        "AND lease_expires_at - now() < interval '3.5 seconds'",
                        (queue_id,),
                    ).fetchone()
                    conn.commit()
                    return None if row is None else str(row[0])

                first_call_uuid = wait_until(
                    lease_short, 30, "the attempt's lease to run below the longest call"
                )
    finally:
        for index in range(DIALERS):
            fault_stack.start_replica("dialer", index)
    with rest(fault_stack, "late") as api:
        wait_until_finished(api, "late", queue_id, 60, "the task to finish")
        (final,) = task_states(api, "late", queue_id)
    assert final["finish_result"] == "success", final
    # The late request placed no call; its attempt was dialed again, and that call connected.
    calls = calls_of_queue(fault_stack, queue_id)
    assert [(attempt, result) for _, attempt, _, _, result in calls] == [(1, "connected")]
    with psycopg.connect(fault_stack.database_url) as conn:
        row = conn.execute(
            "SELECT t.attempts, t.redials, t.cdr, c.dialed_at IS NOT NULL FROM tasks t "
            "JOIN calls c ON c.task_id = t.id WHERE t.queue_id = %s",
            (queue_id,),
        ).fetchone()
    assert row is not None
    attempts, redials, call_uuid, dialed = row
    # Dialed again at least once (again if the dialers, still starting, were late for the
    # new lease too), and still its first attempt: no try was spent.
    assert (attempts, dialed) == (1, True) and redials >= 1
    assert call_uuid != first_call_uuid  # the late request can never be dialed now
    assert dials_logged(fault_stack, queue_id) == Counter({(int(str(final["id"])), 1): 1})


def test_a_call_lost_after_a_and_b_connected_still_counts_as_connected(
    fault_stack: Stack,
) -> None:
    """The dialers die after A and B were connected (and `success` announced), before the
    end of the call is reported: the lease expiry must not count the attempt as failed
    (A and B would be called again, after a `success` webhook)."""
    with rest(fault_stack, "connlost") as api:
        task: dict[str, object] = {"a_number": LONG_CALL_NUMBER, "b_number": LONG_CALL_NUMBER}
        queue_id = add_queue_with_tasks(api, "connlost", 1, [task | {"try_count": 3}])
        with psycopg.connect(fault_stack.database_url, autocommit=True) as conn:

            def connected() -> bool | None:
                row = conn.execute(
                    "SELECT connected_at IS NOT NULL AND result = 'in_progress' FROM calls "
                    "WHERE queue_id = %s",
                    (queue_id,),
                ).fetchone()
                return True if row is not None and row[0] else None

            wait_until(connected, 30, "A and B to be connected")
        for index in range(DIALERS):
            fault_stack.kill_child(f"dialer-{index}")
        for index in range(DIALERS):
            fault_stack.start_replica("dialer", index)
        wait_until_finished(api, "connlost", queue_id, 60, "the task to finish")
        (final,) = task_states(api, "connlost", queue_id)
    assert (final["finish_result"], final["finish_comment"]) == (
        "success",
        "A and B were connected; the end of the call was not reported",
    )
    # One call, never repeated.
    assert [
        (attempt, result) for _, attempt, _, _, result in calls_of_queue(fault_stack, queue_id)
    ] == [(1, "lost")]
