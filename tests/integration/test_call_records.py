"""The dialer's call records against PostgreSQL: recorded before the due time, dialed once,
taken over only when their dialer missed its deadline, and an attempt that placed no call
dialed again by the dispatcher without spending a try (also when its calling window closed
before the call could start)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from scheduler.v1 import events_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.dialer import repository as dialer_db
from services.dispatcher import repository as dispatcher_db
from services.dispatcher.consumer import apply_call_events
from tests.support.seed import add_queue, add_tasks

LEASE = 60.0
NOW = datetime.now(UTC)  # a due time already passed
LONGEST_CALL = 10.0


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    yield engine
    await engine.dispose()


async def claimed_call(engine: AsyncEngine) -> dialer_db.NewCall:
    """A task due now, claimed: the call its dial request asks for."""
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        await add_tasks(conn, queue)
        [task] = await dispatcher_db.claim_due_tasks(conn, queue, 10, lease_seconds=LEASE)
    return dialer_db.NewCall(task.cdr, "acme", queue, task.id, task.attempts, "simulated")


async def record(
    engine: AsyncEngine, call: dialer_db.NewCall, grace: float = 2.0
) -> dialer_db.Started:
    async with transaction(engine) as conn:
        return await dialer_db.record_calls(conn, [call], LONGEST_CALL, 0.25, grace)


async def test_a_recorded_call_is_not_given_to_a_second_dialer_before_its_deadline(
    engine: AsyncEngine,
) -> None:
    call = await claimed_call(engine)

    first = await record(engine, call)
    again = await record(engine, call)  # a redelivery while the first dialer is alive

    assert set(first.may_dial) == {call.call_uuid}
    # Within the hold plus the grace, and within what the lease leaves after the longest call.
    assert 0.25 < first.may_dial[call.call_uuid].within <= 0.25 + 2.0
    assert again.may_dial == {}


async def test_a_record_whose_dialer_missed_its_deadline_is_taken_over(
    engine: AsyncEngine,
) -> None:
    """The dialer died between recording and dialing: a redelivery may dial it."""
    call = await claimed_call(engine)
    await record(engine, call, grace=0.0)  # its deadline: the end of its hold (0.25 s)
    async with transaction(engine) as conn:  # its hold passes, by the database's clock
        await conn.execute(text("UPDATE calls SET dial_by = now() - interval '1 second'"))

    taken = await record(engine, call)

    assert set(taken.may_dial) == {call.call_uuid}


async def test_a_dialed_call_is_never_taken_over(engine: AsyncEngine) -> None:
    call = await claimed_call(engine)
    first = await record(engine, call)
    async with transaction(engine) as conn:
        marked = await dialer_db.mark_calls_dialed(conn, first.may_dial, NOW)
        await conn.execute(text("UPDATE calls SET dial_by = now() - interval '1 second'"))

    again = await record(engine, call)

    assert marked == {call.call_uuid}
    assert again.may_dial == {}


async def test_a_dialer_past_its_deadline_cannot_mark_the_call_it_lost(
    engine: AsyncEngine,
) -> None:
    """A dialer held up past its record's deadline: a redelivery took the record over. The
    first one may no longer mark (and so dial) it; the one that took it over may."""
    call = await claimed_call(engine)
    first = await record(engine, call)
    async with transaction(engine) as conn:
        await conn.execute(text("UPDATE calls SET dial_by = now() - interval '1 second'"))
    taken = await record(engine, call)

    async with transaction(engine) as conn:
        late = await dialer_db.mark_calls_dialed(conn, first.may_dial, NOW)
        marked = await dialer_db.mark_calls_dialed(conn, taken.may_dial, NOW)

    assert (late, marked) == (set(), {call.call_uuid})


async def dial_by(engine: AsyncEngine) -> datetime:
    async with transaction(engine) as conn:
        found: datetime = (await conn.execute(text("SELECT dial_by FROM calls"))).scalar_one()
    return found


async def test_a_deadline_moved_later_lets_its_dialer_mark_the_call_and_no_other(
    engine: AsyncEngine,
) -> None:
    """A call the calls-per-second cap starts after its record's deadline: its dialer
    moves the deadline before it passes. The record as first written no longer marks (a
    dialer that lost track of the move could not dial), the moved one does."""
    call = await claimed_call(engine)
    first = await record(engine, call)
    before = await dial_by(engine)
    async with transaction(engine) as conn:
        moved = await dialer_db.extend_deadlines(
            conn, {call.call_uuid: (first.may_dial[call.call_uuid], 30.0)}, LONGEST_CALL
        )
    (new_dial_by, seconds_left) = moved[call.call_uuid]
    assert new_dial_by == await dial_by(engine)
    assert new_dial_by - before > timedelta(seconds=25)  # it was 0.25 + 2 s away
    assert 29.0 < seconds_left <= 30.0
    again = await record(engine, call)  # a redelivery meanwhile
    moved_record = dialer_db.Recorded(seconds_left, new_dial_by)

    async with transaction(engine) as conn:
        stale = await dialer_db.mark_calls_dialed(conn, first.may_dial, NOW)
        marked = await dialer_db.mark_calls_dialed(conn, {call.call_uuid: moved_record}, NOW)

    assert (again.may_dial, stale, marked) == ({}, set(), {call.call_uuid})


async def test_a_deadline_is_never_moved_past_what_the_lease_covers(engine: AsyncEngine) -> None:
    """The lease expiry must find the deadline passed, or it would dial the attempt again
    while its dialer still may: the longest call must fit between deadline and lease end."""
    call = await claimed_call(engine)
    first = await record(engine, call)
    recorded = first.may_dial[call.call_uuid]
    async with transaction(engine) as conn:
        moved = await dialer_db.extend_deadlines(
            conn, {call.call_uuid: (recorded, 10 * LEASE)}, LONGEST_CALL
        )
        lease_end = (await conn.execute(text("SELECT lease_expires_at FROM tasks"))).scalar_one()
    assert moved[call.call_uuid][0] == lease_end - timedelta(seconds=LONGEST_CALL)


@pytest.mark.parametrize("state", ["deadline passed", "dialed"])
async def test_a_deadline_passed_or_dialed_is_not_moved(engine: AsyncEngine, state: str) -> None:
    """Past its deadline a record may have been taken over by a redelivery; dialed, it
    needs no deadline."""
    call = await claimed_call(engine)
    first = await record(engine, call)
    async with transaction(engine) as conn:
        if state == "dialed":
            await dialer_db.mark_calls_dialed(conn, first.may_dial, NOW)
        else:
            await conn.execute(text("UPDATE calls SET dial_by = now() - interval '1 second'"))
    current = dialer_db.Recorded(1.0, await dial_by(engine))
    async with transaction(engine) as conn:
        moved = await dialer_db.extend_deadlines(
            conn, {call.call_uuid: (current, 30.0)}, LONGEST_CALL
        )
    assert moved == {}
    assert await dial_by(engine) == current.dial_by


async def test_a_request_for_a_lease_too_short_for_the_longest_call_is_not_recorded(
    engine: AsyncEngine,
) -> None:
    call = await claimed_call(engine)
    async with transaction(engine) as conn:
        await conn.execute(text("UPDATE tasks SET lease_expires_at = now() + interval '5 seconds'"))

    late = await record(engine, call)

    assert (late.may_dial, late.too_late) == ({}, {call.call_uuid})
    async with transaction(engine) as conn:
        count = await conn.execute(text("SELECT count(*) FROM calls"))
        assert count.scalar_one() == 0


async def test_a_redialed_attempt_refuses_its_old_request_and_dials_the_new_one(
    engine: AsyncEngine,
) -> None:
    """The dispatcher dials an attempt again (same attempt, new call_uuid) when it placed no
    call: the old request, should it come at last, is stale."""
    call = await claimed_call(engine)
    await record(engine, call)
    async with transaction(engine) as conn:
        await dispatcher_db.forget_undialed_calls(conn, [call.call_uuid])
        redialed = await dispatcher_db.redial(conn, call.task_id, LEASE)

    assert (redialed.id, redialed.attempts) == (call.task_id, call.attempt)
    assert redialed.cdr != call.call_uuid
    stale = await record(engine, call)
    fresh = await record(engine, dataclasses.replace(call, call_uuid=redialed.cdr))
    assert (stale.may_dial, stale.too_late) == ({}, set())
    assert set(fresh.may_dial) == {redialed.cdr}
    async with transaction(engine) as conn:
        row = (await conn.execute(text("SELECT redials, attempts FROM tasks"))).one()
    assert tuple(row) == (1, 1)


async def test_forgetting_an_undialed_record_leaves_a_dialed_one(engine: AsyncEngine) -> None:
    call = await claimed_call(engine)
    first = await record(engine, call)
    async with transaction(engine) as conn:
        await dialer_db.mark_calls_dialed(conn, first.may_dial, NOW)
    async with transaction(engine) as conn:
        await dispatcher_db.forget_undialed_calls(conn, [call.call_uuid])
        rows = await conn.execute(text("SELECT dialed_at = started_at FROM calls"))
        assert rows.scalars().all() == [True]  # a call started when it was dialed


async def test_an_attempt_not_dialed_outside_its_window_is_made_again_as_the_same_attempt(
    engine: AsyncEngine,
) -> None:
    """The dialer reports that the window closed before the call could start: the task
    waits as delayed_interval from the closing, its attempt given back, the undialed
    record gone; claimed again, it makes the same attempt, whose new call is recorded."""
    call = await claimed_call(engine)
    await record(engine, call)
    async with transaction(engine) as conn:
        closing = (await conn.execute(text("SELECT now()"))).scalar_one() - timedelta(seconds=1)
        closing = closing.replace(microsecond=0)
        event = events_pb2.CallEvent(
            kind=events_pb2.CallEvent.KIND_ENDED,
            task_id=call.task_id,
            attempt=call.attempt,
            call_uuid=call.call_uuid,
            outcome=events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW,
            comment="not dialed: the calling window closed",
            window_closes_at_unix_ms=int(closing.timestamp() * 1000),
        )
        webhooks = await apply_call_events(conn, [event])

    async with transaction(engine) as conn:
        task = (await conn.execute(text("SELECT * FROM tasks"))).one()
        records = (await conn.execute(text("SELECT count(*) FROM calls"))).scalar_one()
    assert webhooks == 0
    assert (task.status, task.attempts, task.finish_result) == ("delayed_interval", 0, "")
    assert (task.next_run_at, task.lease_expires_at) == (closing, None)
    assert task.finish_comment == (
        "not dialed: the calling window closed; attempt 1 spent no try and waits for the "
        "window to open"
    )
    assert records == 0

    async with transaction(engine) as conn:
        [again] = await dispatcher_db.claim_due_tasks(conn, call.queue_id, 10, LEASE)
    assert (again.id, again.attempts) == (call.task_id, call.attempt)
    assert again.cdr != call.call_uuid
    fresh = await record(engine, dataclasses.replace(call, call_uuid=again.cdr))
    assert set(fresh.may_dial) == {again.cdr}
