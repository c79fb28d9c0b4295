"""A dialer never runs more calls than DIALER_MAX_CONCURRENT_CALLS, even when one message
brings more dial requests (a claim's batch): it dials what it has room for and passes the
rest on, and every task is still dialed exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from deploy.local.stack import Stack
from tests.support.calls import call_intervals, calls_of_queue, max_overlap
from tests.support.queues import create_queue
from tests.support.simulated_phones import LONG_CALL
from tests.support.stacks import StateDirFactory, service_env, stack_settings

ROOM = 3
TASKS = 10


@pytest.fixture(scope="module")
def small_dialer(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("small-dialer")
    stack = Stack(
        stack_settings(state_dir, dispatchers=1, dialers=1),
        log_dir=state_dir / "logs",
        # No cap in the dispatchers: one claim sends the dialer more than it has room for.
        service_env=service_env(
            DIALER_MAX_CONCURRENT_CALLS=str(ROOM), DISPATCHER_DIALER_CAPACITY="0"
        ),
    )
    stack.start()
    yield stack
    stack.stop()


def test_a_batch_bigger_than_the_dialers_room_is_dialed_a_few_at_a_time(
    small_dialer: Stack,
) -> None:
    tenant = "small-dialer"
    headers = {"Authorization": f"Bearer {small_dialer.token(tenant)}"}
    with httpx.Client(base_url=small_dialer.rest_url, headers=headers, timeout=30) as api:
        # Switched on once all its tasks are stored: one claim takes them all, in one message.
        queue = create_queue(api, tenant, status="off", limit=TASKS)
        queue.add(*[LONG_CALL] * TASKS)
        queue.set(status="on")

        # 1.5 s calls, three at a time: four rounds.
        finished = queue.wait_all_finished(timeout=60)

    assert [t["finish_result"] for t in finished] == ["success"] * TASKS
    calls = calls_of_queue(small_dialer, queue.id)
    assert Counter(c.task_id for c in calls) == {t["id"]: 1 for t in finished}
    assert max_overlap(call_intervals(calls)) == ROOM
