"""A fair share of the dialers between tenants: when they are full, a tenant that floods
them does not make another tenant's single task wait behind its whole backlog."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import httpx
import psycopg
import pytest

from deploy.local.stack import Stack
from tests.support.queues import create_queue
from tests.support.simulated_phones import LONG_CALL
from tests.support.stacks import StateDirFactory, service_env, stack_settings
from tests.support.waiting import wait_for

ROOM_PER_DIALER = 2
DIALERS = 2
CAPACITY = ROOM_PER_DIALER * DIALERS  # the stack gives the dispatchers this capacity
# What one tenant may hold of it: a slot is kept for the others (the dialer reserve).
ONE_TENANTS_MOST = CAPACITY - 1
FLOOD = 16


@pytest.fixture(scope="module")
def small_dialers(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("fair-dialers")
    stack = Stack(
        stack_settings(state_dir, dispatchers=2, dialers=DIALERS),
        log_dir=state_dir / "logs",
        service_env=service_env(DIALER_MAX_CONCURRENT_CALLS=str(ROOM_PER_DIALER)),
    )
    stack.start()
    yield stack
    stack.stop()


def _client(stack: Stack, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(tenant)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=30)


def _calls(stack: Stack, client_id: str, *, in_progress: bool = False) -> list[datetime]:
    """Call starts of a client, oldest first, as the database has them."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT started_at FROM calls WHERE client_id = %s"
            + (" AND result = 'in_progress'" if in_progress else "")
            + " ORDER BY started_at",
            (client_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_single_task_is_not_starved_by_another_tenants_flood(small_dialers: Stack) -> None:
    with _client(small_dialers, "flooder") as flooder, _client(small_dialers, "single") as single:
        flood = create_queue(flooder, "flooder", status="off", limit=50)
        flood.add(*[LONG_CALL] * FLOOD)
        flood.set(status="on")
        # The dialers are full of the flood's 1.5 s calls.
        wait_for(
            lambda: (
                len(_calls(small_dialers, "flooder", in_progress=True)) >= ONE_TENANTS_MOST or None
            ),
            30,
            "the flood to fill the dialers",
        )
        queue = create_queue(single, "single")
        done = queue.wait_finished(queue.add_one()["id"], timeout=60)
        assert done["finish_result"] == "success"

    (single_start,) = _calls(small_dialers, "single")
    flood_before = [s for s in _calls(small_dialers, "flooder") if s < single_start]
    # The single task took the slot kept for other tenants, or one of the first to free up:
    # behind the flood's first wave (and at most one more), not behind its whole backlog of
    # 16 (first come, first served, which is what happened before: every claimed task
    # waited in JetStream).
    assert len(flood_before) <= 2 * CAPACITY, (len(flood_before), FLOOD)
