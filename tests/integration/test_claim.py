"""The claim's rows, as the dial requests are built from them: every field a dialer needs,
from a task stored the way the API stores it (callback_params taken apart in SQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.dispatcher import repository
from services.dispatcher.messages import dial_requests
from tests.support.seed import add_queue, add_tasks

PARAMS = {
    "extended_a_numbers": ["+15550000002", "+15550000003"],
    "caller_id_name": "Front desk",
    "caller_id_number": "+15550000009",
}


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    yield engine
    await engine.dispose()


async def add_task(engine: AsyncEngine, params: Mapping[str, object], url_success: str) -> int:
    async with transaction(engine) as conn:
        queue = await add_queue(conn)
        await add_tasks(
            conn, queue, extension_id=7, url_success=url_success, callback_params=params
        )
    return queue


async def claimed_request(engine: AsyncEngine, queue: int) -> events_pb2.DialRequest:
    async with transaction(engine) as conn:
        rows = await repository.claim_due_tasks(conn, queue, 10, lease_seconds=60)
    batch = events_pb2.DialRequests()
    batch.ParseFromString(dial_requests(rows).payload)
    [request] = batch.requests
    return request


async def test_a_claimed_task_dial_request_carries_its_numbers_and_caller_id(
    engine: AsyncEngine,
) -> None:
    queue = await add_task(engine, PARAMS, url_success="")
    request = await claimed_request(engine, queue)

    assert (request.client_id, request.queue_id, request.attempt) == ("acme", queue, 1)
    assert (request.a_number, request.b_number) == ("+15550000000", "+15550000001")
    assert list(request.extended_a_numbers) == PARAMS["extended_a_numbers"]
    assert request.caller_id_name == "Front desk"
    assert request.caller_id_number == "+15550000009"
    assert request.extension_id == 7
    assert len(request.call_uuid) == 36
    assert request.due_at_unix_ms > 0
    assert request.skip_connected_event  # nobody waits for its `success`


async def test_a_task_without_callback_params_gets_empty_ones(engine: AsyncEngine) -> None:
    queue = await add_task(engine, {}, url_success="https://example.test/success")
    request = await claimed_request(engine, queue)

    assert list(request.extended_a_numbers) == []
    assert (request.caller_id_name, request.caller_id_number) == ("", "")
    assert not request.skip_connected_event
