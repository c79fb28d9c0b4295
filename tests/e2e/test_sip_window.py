"""The calling window checked again just before dialing, with real SIP phones (issue 20):
calls held back by the dialer's calls-per-second cap past their window's closing are not
placed. The evidence is the phone's own message trace (sipp -trace_msg): no INVITE reaches
it between the closing and the window's next opening."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from bench.chaos_sip import read_trace
from deploy.local.stack import Stack
from services.dialer.consumer import DIAL_GRACE_SECONDS, MAX_MARK_LEAD_SECONDS
from tests.sip.phones import Phone, all_done, free_phone_port, scenario, start_phone
from tests.support.database import db_now
from tests.support.queues import Queue, create_queue
from tests.support.stacks import StateDirFactory, service_env, stack_settings
from tests.support.wire_times import parse_wire

pytestmark = pytest.mark.slow

A, B = "127.0.0.2", "127.0.0.3"
NUMBERS = {"1001": A, "2001": B}
PORT = free_phone_port(*NUMBERS.values())
# One call every 2/3 s at most: three calls due together start 0, 0.67 and 1.33 s after
# their due time; six, up to 3.33 s after it, past their records' first deadline (the due
# time and DIAL_GRACE_SECONDS).
CALLS_PER_SECOND = "1.5"


@pytest.fixture(scope="module")
def paced_sip_stack(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("sip-window")
    routes = [{"pattern": n, "proxy": f"{host}:{PORT}"} for n, host in NUMBERS.items()]
    env = service_env(
        DIALER_BACKEND="sip",
        DIALER_SIP_LISTEN="127.0.0.1:0",
        DIALER_SIP_ROUTES=json.dumps(routes),
        DIALER_RING_TIMEOUT_SECONDS="5",
        DIALER_SIP_CALLS_PER_SECOND=CALLS_PER_SECOND,
    )
    stack = Stack(
        stack_settings(state_dir, dispatchers=1, dialers=1),
        log_dir=state_dir / "logs",
        service_env=env,
    )
    stack.start()
    yield stack
    stack.stop()


def wall(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


HOUR = timedelta(hours=1)


def windowed_queue(api: httpx.Client, conditions: list[dict[str, Any]]) -> Queue:
    interval = api.post(
        "/client/sipwin/interval/", json={"timezone": "UTC", "conditions": conditions}
    )
    assert interval.status_code == 200, interval.text
    queue = create_queue(api, "sipwin", status="off", limit=3)
    queue.set(interval_id=interval.json()["id"], status="on")
    return queue


def calls_of(queue: Queue, task_id: int) -> list[dict[str, Any]]:
    """The task's call records, through the API."""
    response = queue.api.get(f"{queue.path}/task/{task_id}/calls")
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def invites_received(phone: Phone) -> list[datetime]:
    """When the phone received each initial INVITE, by its own clock (UTC)."""
    return sorted(
        event.at.astimezone(UTC)  # sipp writes local time
        for path in sorted(phone.workdir.glob("*_messages.log"))
        for event in read_trace(path, "a")
        if event.direction == "R" and event.request == "INVITE" and not event.to_tag
    )


async def test_calls_paced_past_the_windows_closing_are_not_placed(
    paced_sip_stack: Stack,
) -> None:
    """Three tasks due together, the window closing 1 s after their due time: the calls
    start at the due time and 0.67 s later; the third, 1.33 s after, would start after the
    closing and is not placed. It waits as delayed_interval and is called, as its first
    attempt (try_count 1), when the window opens again."""
    stack = paced_sip_stack
    due = db_now(stack).replace(microsecond=0) + timedelta(seconds=4)
    closing = due + timedelta(seconds=1)
    reopening = closing + timedelta(seconds=5)
    trace = ("-trace_msg",)
    phones = [
        await start_phone(A, scenario("answer", "a"), port=PORT, calls=3, extra_args=trace),
        await start_phone(
            B, scenario("answer", "b", hangup="phone", talk_ms=300), port=PORT, calls=3
        ),
    ]
    headers = {"Authorization": f"Bearer {stack.token('sipwin')}"}
    try:
        with httpx.Client(base_url=stack.rest_url, headers=headers, timeout=30) as api:
            queue = windowed_queue(
                api,
                [
                    {"start_datetime": wall(due - HOUR), "end_datetime": wall(closing)},
                    {"start_datetime": wall(reopening), "end_datetime": wall(reopening + HOUR)},
                ],
            )
            tasks = queue.add(
                *(
                    {"a_number": "1001", "b_number": "2001", "try_count": 1,
                     "start_time_utc": wall(due)}
                    for _ in range(3)
                )
            )  # fmt: skip
            done = [queue.wait_finished(task["id"]) for task in tasks]
            records = [calls_of(queue, task["id"]) for task in tasks]
        await all_done(phones)
    finally:
        for phone in phones:
            phone.stop()

    assert [task["finish_result"] for task in done] == ["success"] * 3, done
    # One call each, its first attempt: the refused request placed none and spent no try.
    assert [[r["attempt"] for r in calls] for calls in records] == [[1], [1], [1]]
    starts = sorted(parse_wire(calls[0]["started_utc"]) for calls in records)
    assert starts[1] < closing <= reopening <= starts[2], (starts, closing, reopening)
    # The phone's own log: two INVITEs before the closing, none while the window was
    # closed, the third once it had opened again (a call may start up to the dialer's
    # mark lead before its due time, here the opening: see MAX_MARK_LEAD_SECONDS).
    invites = invites_received(phones[0])
    assert len(invites) == 3, invites
    opened = reopening - timedelta(seconds=MAX_MARK_LEAD_SECONDS)
    assert invites[1] < closing and invites[2] >= opened, (invites, closing, reopening)


async def test_calls_the_cap_starts_past_their_records_deadline_are_placed_once_in_turn(
    paced_sip_stack: Stack,
) -> None:
    """Six tasks due together: the cap starts their calls up to 3.33 s after the due time,
    later than the deadline their records were first given (2 s). Each call is placed at
    its turn, once, as its attempt's only call: no attempt waits for its lease to end (20 s
    here, an hour by default) to be dialed again. The phone's own trace counts the INVITEs
    and their spacing."""
    stack = paced_sip_stack
    count = 6
    due = db_now(stack).replace(microsecond=0) + timedelta(seconds=4)
    trace = ("-trace_msg",)
    phones = [
        await start_phone(A, scenario("answer", "a"), port=PORT, calls=count, extra_args=trace),
        await start_phone(
            B, scenario("answer", "b", hangup="phone", talk_ms=300), port=PORT, calls=count
        ),
    ]
    headers = {"Authorization": f"Bearer {stack.token('sippaced')}"}
    try:
        with httpx.Client(base_url=stack.rest_url, headers=headers, timeout=30) as api:
            queue = create_queue(api, "sippaced", limit=count)
            tasks = queue.add(
                *(
                    {"a_number": "1001", "b_number": "2001", "try_count": 1,
                     "start_time_utc": wall(due)}
                    for _ in range(count)
                )
            )  # fmt: skip
            done = [queue.wait_finished(task["id"]) for task in tasks]
        await all_done(phones)
    finally:
        for phone in phones:
            phone.stop()

    assert [task["finish_result"] for task in done] == ["success"] * count, done
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT t.redials, count(c.*), max(c.attempt) FROM tasks t "
            "JOIN calls c ON c.task_id = t.id WHERE t.id = ANY(%s) GROUP BY t.id",
            ([task["id"] for task in tasks],),
        ).fetchall()
    # Never dialed again (redials), one call each, as the first attempt.
    assert sorted(tuple(row) for row in rows) == [(0, 1, 1)] * count, rows
    invites = invites_received(phones[0])
    assert len(invites) == count, invites
    # The cap spaced them (one per 2/3 s): the last ones rang past the first deadline.
    assert invites[-1] - invites[0] > timedelta(seconds=DIAL_GRACE_SECONDS), invites
