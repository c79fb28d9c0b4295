"""Task execution end to end: the real api, 3 dispatchers, 2 dialers (simulated phones),
PostgreSQL and NATS. Life cycle, start times, queues switched on and off, concurrent_task_limit
across replicas, retries, and deletes while tasks wait or run."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime, timedelta

import httpx
import psycopg

from deploy.local.stack import Stack
from services.dispatcher.settings import DispatcherSettings
from tests.support.calls import call_intervals, calls_of_queue, calls_of_task, max_overlap
from tests.support.database import db_now
from tests.support.queues import create_queue
from tests.support.simulated_phones import (
    ANSWERING_NUMBER,
    BUSY_NUMBER,
    LONG_CALL,
    NO_ANSWER_NUMBER,
    OTHER_ANSWERING_NUMBER,
    REJECT_NUMBER,
)
from tests.support.stacks import service_env
from tests.support.waiting import POLL_SECONDS, WAIT_SECONDS, wait_for
from tests.support.wire_times import whole_seconds_from_now, wire_time

# A task may be claimed this long before it is due (the test stack keeps the default).
LOOKAHEAD = timedelta(seconds=DispatcherSettings.model_fields["lookahead_seconds"].default)


def states_before(stack: Stack, task_id: int, moment: datetime) -> list[tuple[str, str]]:
    """The task's (status, cdr), looked at every 0.05 s while the database's clock is before
    `moment`. The clock is read after each look's snapshot: a look counts only if all it
    saw was committed before `moment` (no race between a request and when it is served)."""
    seen: list[tuple[str, str]] = []
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT status, cdr, clock_timestamp() FROM tasks WHERE id = %s", (task_id,)
            ).fetchone()
            assert row is not None, f"task {task_id} is gone"
            status, cdr, read_at = row
            if read_at >= moment:
                return seen
            seen.append((status, cdr))
            time.sleep(POLL_SECONDS)


def next_run_at(stack: Stack, task_id: int) -> datetime:
    """When the task is due next, as the database has it."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT next_run_at FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None, f"task {task_id} is gone"
    due: datetime = row[0]
    return due


def first_attempt_resolved(stack: Stack, task_id: int) -> bool:
    """The result of the task's first attempt has been applied (it waits for, makes or has
    made another, or it is finished)."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT status, attempts FROM tasks WHERE id = %s", (task_id,)
        ).fetchone()
    assert row is not None, f"task {task_id} is gone"
    status, attempts = row
    return bool(status in ("delayed", "finished") or attempts >= 2)


# --- life cycle ---------------------------------------------------------------------------------


def test_task_without_start_time_runs_at_once_and_connects(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one()
    assert task["status"] == "scheduled" and task["cdr"] == ""

    done = queue.wait_finished(task["id"], timeout=30)

    assert done["finish_result"] == "success"
    assert done["finish_comment"] == "A and B were connected"
    assert str(uuid.UUID(done["cdr"])) == done["cdr"]
    history = api.get(f"/client/{tenant}/call_history/{done['cdr']}")
    assert history.status_code == 200, history.text
    record = history.json()
    assert record["call_uuid"] == done["cdr"]
    assert record["task_id"] == task["id"]
    assert record["scheduler_id"] == queue.id
    assert record["attempt"] == 1
    assert record["result"] == "connected"
    assert [(leg["role"], leg["result"]) for leg in record["legs"]] == [
        ("a", "answered"),
        ("b", "answered"),
    ]
    assert [leg["number"] for leg in record["legs"]] == [ANSWERING_NUMBER, OTHER_ANSWERING_NUMBER]
    assert [c.attempt for c in calls_of_task(stack, task["id"])] == [1]


def test_future_start_time_waits_until_then(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    start = whole_seconds_from_now(4)
    task = queue.add_one(start_time_utc=wire_time(start))
    assert task["start_time_utc"] == wire_time(start)

    # Not claimed while not due (a claim may come up to the lookahead early), by the
    # database's clock, the one that decides.
    seen = states_before(stack, task["id"], start - LOOKAHEAD)
    assert seen, "no look at the task before it was due"
    assert set(seen) == {("scheduled", "")}, seen
    done = queue.wait_finished(task["id"], timeout=30)

    assert done["finish_result"] == "success"
    [call] = calls_of_task(stack, task["id"])
    # Dialed at its start time, not before. How soon after is the bench's lateness (p50, p99,
    # max), not a number against this machine's clock.
    assert call.started_at >= start, (call.started_at, start)


def test_past_start_time_runs_at_once(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)  # limit 1: one call at a time, the earliest due first
    task = queue.add_one(start_time_utc=wire_time(whole_seconds_from_now(-3600)))
    # Added after it, without a start time: due at once.
    now = queue.add_one()

    done = queue.wait_finished(task["id"], timeout=30)
    queue.wait_finished(now["id"], timeout=30)

    assert done["finish_result"] == "success"
    # Due already (an hour ago), so called before a task that is due from the moment it was
    # added after it: by the order of the calls, not by a clock against a number.
    assert [c.task_id for c in calls_of_queue(stack, queue.id)] == [task["id"], now["id"]]


# --- queue on / off -----------------------------------------------------------------------------


def test_off_queue_holds_tasks_until_switched_on(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant, status="off", limit=5)
    tasks = queue.add(*({"a_number": f"+1555010000{i}", "b_number": "101"} for i in range(3)))

    # A task of the tenant's, added afterwards to a switched-on queue: the claim that takes it
    # looks at all the tenant's queues with due work, these tasks in by then, and would have
    # claimed them as well (a claim sets status and cdr at once).
    witness = create_queue(api, tenant)
    witness.wait_finished(witness.add_one()["id"])
    for task in queue.tasks():
        assert (task["status"], task["cdr"]) == ("scheduled", ""), task
    assert calls_of_queue(stack, queue.id) == []

    assert queue.set(status="on")["status"] == "on"
    done = queue.wait_all_finished(timeout=30)

    assert [t["id"] for t in done] == [t["id"] for t in tasks]
    assert {t["finish_result"] for t in done} == {"success"}
    assert len(calls_of_queue(stack, queue.id)) == 3


def test_switching_off_lets_the_running_call_finish_and_starts_nothing_new(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant, limit=1)
    running, *waiting = queue.add(
        LONG_CALL,
        {"a_number": "+15550200002", "b_number": "101"},
        {"a_number": "+15550200003", "b_number": "101"},
    )
    queue.wait_status(running["id"], "executed", timeout=30)

    assert queue.set(status="off")["status"] == "off"
    finished = queue.wait_finished(running["id"], timeout=30)

    assert finished["finish_result"] == "success"
    # The freed place starts no new attempt on an off queue. Witness: a task added now to
    # another, switched-on, queue of the tenant's; the claim that takes it comes after the
    # place was freed and looks at the tenant's queues with due work.
    witness = create_queue(api, tenant)
    witness.wait_finished(witness.add_one()["id"])
    for task in waiting:
        current = queue.must_task(task["id"])
        assert (current["status"], current["cdr"]) == ("scheduled", ""), current
    assert [c.task_id for c in calls_of_queue(stack, queue.id)] == [running["id"]]


# --- concurrent_task_limit ----------------------------------------------------------------------


def test_concurrent_task_limit_holds_across_replicas(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    wide = create_queue(api, tenant, status="off", limit=3)
    narrow = create_queue(api, tenant, status="off", limit=1)
    wide.add(*[LONG_CALL] * 8)
    narrow.add(*[LONG_CALL] * 3)
    # Both at once, so that the three dispatchers compete for both queues.
    wide.set(status="on")
    narrow.set(status="on")

    wide_done = wide.wait_all_finished()
    narrow_done = narrow.wait_all_finished()

    assert {t["finish_result"] for t in wide_done + narrow_done} == {"success"}
    wide_calls = calls_of_queue(stack, wide.id)
    narrow_calls = calls_of_queue(stack, narrow.id)
    assert len(wide_calls) == 8 and len(narrow_calls) == 3
    # Equal to the limit: the audit can see overlaps, so "not above" means something.
    assert max_overlap(call_intervals(wide_calls)) == 3
    assert max_overlap(call_intervals(narrow_calls)) == 1


# The attempt lease of the test stack: a claim sets lease_expires_at to its now() plus this.
LEASE = timedelta(seconds=float(service_env()["DISPATCHER_ATTEMPT_LEASE_SECONDS"]))


def claim_times(stack: Stack, task_ids: list[int]) -> list[datetime] | None:
    """When the tasks' current attempts were claimed (the database's now() of the claim: the
    lease less its length), read once all of them are executing; None if one had already
    finished before they were all seen executing."""

    def look() -> tuple[list[datetime] | None] | None:
        with psycopg.connect(stack.database_url) as conn:
            rows = conn.execute(
                "SELECT status, lease_expires_at FROM tasks WHERE id = ANY(%s)", (task_ids,)
            ).fetchall()
        statuses = {status for status, _ in rows}
        if statuses == {"executed"}:
            return ([lease - LEASE for _, lease in rows],)
        return (None,) if "finished" in statuses else None

    (found,) = wait_for(look, WAIT_SECONDS, f"tasks {task_ids} to be claimed")
    return found


def raise_the_limit_during_a_call(stack: Stack, api: httpx.Client, tenant: str) -> bool:
    """Raise a queue's limit from 1 to 3 while its first long call goes on; whether the two
    waiting tasks were claimed before that call ended (by the database's clock)."""
    queue = create_queue(api, tenant, limit=1)
    first, *others = queue.add(*[LONG_CALL] * 3)
    queue.wait_status(first["id"], "executed", timeout=30)

    queue.set(concurrent_task_limit=3)
    claimed = claim_times(stack, [task["id"] for task in others])
    queue.wait_all_finished()

    assert max_overlap(call_intervals(calls_of_queue(stack, queue.id))) <= 3
    [first_call] = calls_of_task(stack, first["id"])
    assert first_call.ended_at is not None
    return claimed is not None and max(claimed) < first_call.ended_at


def test_raising_the_limit_starts_more_at_once(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    # The other two are claimed while the first still talks (1.5 s), not once it ended. Had
    # the new limit waited for a call to end, no round could show it; a machine too slow to
    # claim them within the call gets another round, rather than a clock against a number.
    for _ in range(5):
        if raise_the_limit_during_a_call(stack, api, tenant):
            break
    else:
        raise AssertionError("the raised limit never let a task start during the first call")


# --- retries ------------------------------------------------------------------------------------


def test_busy_a_is_retried_after_the_pause_then_fails(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=3, try_again_pause=1)

    delayed = queue.wait_status(task["id"], "delayed", timeout=30)
    assert delayed["finish_result"] == ""
    assert "A was busy" in delayed["finish_comment"]
    done = queue.wait_finished(task["id"], timeout=30)

    assert done["finish_result"] == "failed"
    assert "A was busy" in done["finish_comment"]
    assert "3 attempts" in done["finish_comment"]
    calls = calls_of_task(stack, task["id"])
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert [c.result for c in calls] == ["a_busy"] * 3
    assert done["cdr"] == calls[-1].call_uuid
    assert len({c.call_uuid for c in calls}) == 3
    for earlier, later in itertools.pairwise(calls):
        gap = (later.started_at - earlier.started_at).total_seconds()
        assert gap >= 1.0, f"attempt {later.attempt} started {gap:.3f} s after the one before"


FAILURES = {
    # (a_number, b_number): the reason a person reads in finish_comment
    (BUSY_NUMBER, "101"): "A was busy",
    (NO_ANSWER_NUMBER, "101"): "A did not answer",
    (REJECT_NUMBER, "101"): "A rejected the call",
    (ANSWERING_NUMBER, BUSY_NUMBER): "B was busy",
    (ANSWERING_NUMBER, NO_ANSWER_NUMBER): "B did not answer",
    (ANSWERING_NUMBER, REJECT_NUMBER): "B rejected the call",
}


def test_failed_calls_are_explained_in_finish_comment(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant, limit=len(FAILURES))
    tasks = queue.add(*({"a_number": a, "b_number": b} for a, b in FAILURES))

    done = {t["id"]: t for t in queue.wait_all_finished(timeout=30)}

    for task, reason in zip(tasks, FAILURES.values(), strict=True):
        final = done[task["id"]]
        assert final["finish_result"] == "failed", final
        assert final["finish_comment"] == f"{reason} (1 attempt made)", final
        [call] = calls_of_task(stack, task["id"])
        assert call.call_uuid == final["cdr"]


def test_successful_task_with_tries_left_makes_one_call(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    task = queue.add_one(try_count=3, try_again_pause=0)

    done = queue.wait_finished(task["id"], timeout=30)
    # No further attempt follows a success. Witness: a task added now to the same queue (limit
    # 1) runs to its end; a further attempt (pause 0, due at once) would have come before it,
    # and its result after the success's on the same stream.
    queue.wait_finished(queue.add_one()["id"])

    assert done["finish_result"] == "success"
    assert queue.must_task(task["id"])["cdr"] == done["cdr"]
    assert [c.attempt for c in calls_of_task(stack, task["id"])] == [1]


def test_a_connected_call_records_when_a_and_b_were_connected(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    """Noted by the dialer for a task without url_success (it reports no connection to the
    dispatcher), by the dispatcher for one with it, and in the end record either way."""
    queue = create_queue(api, tenant, limit=2)
    quiet, announced = queue.add(
        {"a_number": ANSWERING_NUMBER, "b_number": OTHER_ANSWERING_NUMBER},
        {
            "a_number": ANSWERING_NUMBER,
            "b_number": OTHER_ANSWERING_NUMBER,
            "url_success": "https://hooks.example.com/success",
        },
    )
    for task in (quiet, announced):
        assert queue.wait_finished(task["id"], timeout=30)["finish_result"] == "success"
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT task_id, started_at <= connected_at AND connected_at <= ended_at "
            "FROM calls WHERE queue_id = %s ORDER BY task_id",
            (queue.id,),
        ).fetchall()
    assert rows == [(quiet["id"], True), (announced["id"], True)]


def test_zero_pause_retries_at_once(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)  # limit 1: one call at a time, the earliest due first
    task = queue.add_one(b_number=BUSY_NUMBER, try_count=3, try_again_pause="0")
    assert task["try_again_pause"] == "0"
    # A task added once the first attempt's result was applied: the second attempt, due from
    # that moment (no pause), comes before it. With any pause longer than it took to add it
    # (the default is 60 s), it would come first. An order, not a clock against a number.
    wait_for(lambda: first_attempt_resolved(stack, task["id"]), WAIT_SECONDS, "attempt 1's end")
    later = queue.add_one()

    done = queue.wait_finished(task["id"], timeout=30)
    queue.wait_finished(later["id"], timeout=30)

    assert done["finish_result"] == "failed"
    assert done["finish_comment"] == "B was busy (3 attempts made)"
    calls = calls_of_task(stack, task["id"])
    assert [c.attempt for c in calls] == [1, 2, 3]
    order = [(c.task_id, c.attempt) for c in calls_of_queue(stack, queue.id)]
    assert order.index((task["id"], 2)) < order.index((later["id"], 1)), order


# --- retries of the A leg (try_count_caller) ----------------------------------------------------


def a_leg_failures(stack: Stack, task_id: int) -> int:
    """tasks.caller_failures, as another client of the database sees it."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT caller_failures FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None, f"task {task_id} is gone"
    failures: int = row[0]
    return failures


def test_a_that_never_answers_stops_at_try_count_caller(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    # try_again_pause of an hour: only try_again_pause_caller (0) lets the second call come.
    task = queue.add_one(
        a_number=NO_ANSWER_NUMBER,
        try_count=5,
        try_again_pause=3600,
        try_count_caller=2,
        try_again_pause_caller=0,
    )
    assert (task["try_count_caller"], task["try_again_pause_caller"]) == (2, 0)

    done = queue.wait_finished(task["id"], timeout=30)

    assert done["finish_result"] == "failed"
    assert done["finish_comment"] == "A did not answer (2 of 2 A-leg tries, try_count_caller)"
    # A finished task is never claimed again: these are all its calls.
    calls = calls_of_task(stack, task["id"])
    assert [(c.attempt, c.result) for c in calls] == [(1, "a_no_answer"), (2, "a_no_answer")]
    assert done["cdr"] == calls[-1].call_uuid
    assert a_leg_failures(stack, task["id"]) == 2


def test_b_failures_spend_no_try_of_a(stack: Stack, api: httpx.Client, tenant: str) -> None:
    """One A-leg try, and A answers every time: B's failures end the task by try_count."""
    queue = create_queue(api, tenant)
    task = queue.add_one(b_number=BUSY_NUMBER, try_count=3, try_again_pause=0, try_count_caller=1)

    done = queue.wait_finished(task["id"], timeout=30)

    assert done["finish_result"] == "failed"
    assert done["finish_comment"] == "B was busy (3 attempts made, try_count)"
    calls = calls_of_task(stack, task["id"])
    assert [(c.attempt, c.result) for c in calls] == [(n, "b_busy") for n in (1, 2, 3)]
    assert a_leg_failures(stack, task["id"]) == 0


# --- deletes ------------------------------------------------------------------------------------


def test_deleted_scheduled_task_is_never_called(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)
    start = whole_seconds_from_now(2)
    task = queue.add_one(start_time_utc=wire_time(start))
    # A companion due at the same moment proves the queue did run then.
    companion = queue.add_one(start_time_utc=wire_time(start))

    queue.delete_task(task["id"])

    assert queue.task(task["id"]) is None
    # The queue (limit 1) takes the earliest due first, and of those the lowest id: had the
    # task still been there, it would have been called (and its call ended) before the
    # companion's call started. No wait after that.
    queue.wait_finished(companion["id"], timeout=30)
    assert calls_of_task(stack, task["id"]) == []


def test_deleted_delayed_task_is_not_tried_again(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)  # limit 1: one call at a time, the earliest due first
    # A pause long enough that the task is still delayed when it is deleted.
    task = queue.add_one(a_number=BUSY_NUMBER, try_count=3, try_again_pause=4)
    queue.wait_status(task["id"], "delayed", timeout=30)
    due = next_run_at(stack, task["id"])

    queue.delete_task(task["id"])

    assert queue.task(task["id"]) is None
    [first] = calls_of_task(stack, task["id"])
    assert first.ended_at is not None
    # Witness: a task due no earlier than the next attempt was. The queue takes the earliest
    # due first, so that attempt would have been called (and ended) before this one started.
    companion = queue.add_one(start_time_utc=wire_time(due + timedelta(seconds=1)))
    queue.wait_finished(companion["id"], timeout=30)
    assert [c.attempt for c in calls_of_task(stack, task["id"])] == [1]


def test_deleted_executing_task_call_ends_and_is_not_retried(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = create_queue(api, tenant)  # limit 1: one call at a time, the earliest due first
    task = queue.add_one(**LONG_CALL, try_count=3, try_again_pause=0)
    queue.wait_status(task["id"], "executed", timeout=30)
    wait_for(lambda: calls_of_task(stack, task["id"]), WAIT_SECONDS, "the dialer to place the call")

    queue.delete_task(task["id"])

    assert queue.task(task["id"]) is None
    assert api.get(f"{queue.path}/task/{task['id']}").status_code == 404

    def ended() -> bool:
        return all(c.result != "in_progress" for c in calls_of_task(stack, task["id"]))

    wait_for(ended, WAIT_SECONDS, "the call in progress to end")
    # Witnesses: two tasks, each added once the one before finished. Had the task survived,
    # its next attempt (pause 0) would have been due when its call's end was applied, before
    # the first of them ended (that call started only once this one had ended), and so
    # claimed and called before the second.
    for _ in range(2):
        queue.wait_finished(queue.add_one()["id"])
    [call] = calls_of_task(stack, task["id"])
    assert call.attempt == 1
    assert call.ended_at is not None and call.result != "in_progress"


def test_deleting_an_executing_task_keeps_the_queue_within_its_limit(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    """The call of a deleted task may still be in progress: the queue's limit counts
    callbacks in progress, so the next task may not start on top of it."""
    queue = create_queue(api, tenant, limit=1)
    first, second = queue.add(
        LONG_CALL,
        {"a_number": "+15550400002", "b_number": "101"},
    )
    wait_for(lambda: calls_of_task(stack, first["id"]), WAIT_SECONDS, "the first call to start")

    queue.delete_task(first["id"])
    queue.wait_finished(second["id"], timeout=30)

    def first_ended() -> bool:
        return all(c.ended_at is not None for c in calls_of_task(stack, first["id"]))

    wait_for(first_ended, WAIT_SECONDS, "the deleted task's call to end")
    calls = calls_of_queue(stack, queue.id)
    assert len(calls) == 2
    timeline = [
        f"task {c.task_id}: {c.started_at:%H:%M:%S.%f} .. {c.ended_at:%H:%M:%S.%f}" for c in calls
    ]
    assert max_overlap(call_intervals(calls)) <= 1, timeline


def test_deleted_queue_starts_no_new_call(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, limit=2)
    running = queue.add(LONG_CALL, LONG_CALL)
    waiting = queue.add(*({"a_number": f"+155505100{i:02d}", "b_number": "101"} for i in range(4)))

    def both_dialed() -> bool:
        return len(calls_of_queue(stack, queue.id)) == 2

    wait_for(both_dialed, WAIT_SECONDS, "both long calls to be placed")

    queue.delete()
    deleted_at = db_now(stack)

    assert api.get(queue.path).status_code == 404
    for task in running + waiting:
        assert api.get(f"{queue.path}/task/{task['id']}").status_code == 404

    def calls_ended() -> bool:
        return all(c.result != "in_progress" for c in calls_of_queue(stack, queue.id))

    wait_for(calls_ended, WAIT_SECONDS, "the calls in progress to end")
    # Nothing new starts. Witness: a task of the tenant's in a new queue, claimed and dialed
    # after the DELETE and after the calls it let go on, through the same dispatchers and
    # dialers.
    witness = create_queue(api, tenant)
    witness.wait_finished(witness.add_one()["id"])
    calls = calls_of_queue(stack, queue.id)
    late = [c for c in calls if c.started_at >= deleted_at]
    assert late == [], f"calls started after the DELETE answered at {deleted_at}: {late}"
    assert {c.task_id for c in calls} == {t["id"] for t in running}
