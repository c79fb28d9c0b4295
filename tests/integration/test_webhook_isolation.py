"""The notifier's claim keeps receivers and tenants apart, on a database of its own: a host
or tenant at its in-flight cap is skipped (its deliveries are not claimed to wait), the
others get at most the room they have left, and the leases of deliveries in flight are
renewed."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import make_engine, transaction
from services.notifier import repository
from services.notifier.limits import Caps, InFlight

LEASE = 15.0
WAIT = 600.0  # missing_event_wait_seconds
CAPS = Caps(total=200, per_host=8, per_tenant=50)


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(migrated_database, pool_size=1)
    yield engine
    await engine.dispose()


_task_ids = iter(range(1, 10**9))


async def add(engine: AsyncEngine, client_id: str, urls: Sequence[str], **values: Any) -> None:
    """One pending `after` delivery per URL, each of a task of its own, due now (or
    next_in seconds from now), the older first."""
    rows = [
        {
            "event_id": f"{task_id}:1:after",
            "client_id": client_id,
            "task_id": task_id,
            "url": url,
            "next_in": values.get("next_in", 0.0) + index * 0.001,
        }
        for index, (task_id, url) in enumerate(zip(_task_ids, urls, strict=False))
    ]
    async with transaction(engine) as conn:
        await conn.execute(
            text("""
                INSERT INTO webhook_deliveries (event_id, client_id, task_id, seq, event, url,
                                                body, next_attempt_at)
                VALUES (:event_id, :client_id, :task_id, 19, 'after', :url, '{}',
                        now() - interval '1 minute' + make_interval(secs => :next_in))
            """),
            rows,
        )


async def claim(engine: AsyncEngine, slots: InFlight, how_many: int = 100) -> list[Row[Any]]:
    """Claim as the sender does, and count what was claimed as started."""
    async with transaction(engine) as conn:
        rows = list(await repository.claim_due(conn, slots.room(how_many), LEASE, WAIT))
    for row in rows:
        slots.start(row.host, row.client_id)
    return rows


def hosts(rows: Sequence[Row[Any]]) -> Counter[str]:
    return Counter(row.host for row in rows)


async def test_a_full_host_is_skipped_and_the_next_one_claimed_behind_it(
    engine: AsyncEngine,
) -> None:
    await add(engine, "a", ["https://slow.example/hook"] * 300)  # older: first in line
    await add(engine, "b", ["https://fast.example/hook"] * 3, next_in=10)

    slots = InFlight(CAPS)
    first = await claim(engine, slots)
    # The first 100 in line are all the slow host's: it gets its 8, and no more wait.
    assert hosts(first) == {"slow.example": 8}
    second = await claim(engine, slots)
    assert hosts(second) == {"fast.example": 3}
    assert await claim(engine, slots) == []
    # Nothing claimable now; the slow host's queue does not make the sender look again at
    # once (its ending deliveries wake the sender).
    async with transaction(engine) as conn:
        due = await repository.seconds_until_next_due(conn, WAIT, slots.room(100))
        everything = await repository.seconds_until_next_due(conn, WAIT)
    assert due is not None and due > 0  # the fast host's leases
    assert everything is not None and everything <= 0


async def test_a_host_with_deliveries_in_flight_gets_only_the_room_it_has_left(
    engine: AsyncEngine,
) -> None:
    await add(engine, "a", ["https://h.example/1"] * 20)
    slots = InFlight(CAPS)
    for _ in range(3):
        slots.start("h.example", "a")  # e.g. claimed by an earlier claim
    assert hosts(await claim(engine, slots)) == {"h.example": 5}


async def test_a_tenant_at_its_cap_is_skipped_whatever_the_number_of_its_hosts(
    engine: AsyncEngine,
) -> None:
    random_subdomains = [f"https://x{index}.attacker.example/" for index in range(120)]
    await add(engine, "a", random_subdomains)
    await add(engine, "b", ["https://b.example/"])

    slots = InFlight(CAPS)
    claimed: list[Row[Any]] = []
    while batch := await claim(engine, slots, how_many=30):
        claimed += batch
    assert Counter(row.client_id for row in claimed) == {"a": 50, "b": 1}
    assert slots.room(100).full_tenants == ("a",)


async def test_the_host_is_the_url_host_in_lower_case_without_user_info_or_port(
    engine: AsyncEngine,
) -> None:
    await add(
        engine,
        "a",
        [
            "https://user:secret@Hooks.Example.COM:8443/path?q=1",
            "http://hooks.example.com/other#frag",
            "https://hooks.example.com?x=@y",
            "http://[::1]:8080/v6",
            "http://127.0.0.1:9000/",
        ],
    )
    rows = await claim(engine, InFlight(CAPS))
    assert hosts(rows) == {"hooks.example.com": 3, "[::1]": 1, "127.0.0.1": 1}


async def test_leases_of_deliveries_in_flight_are_renewed_unless_taken_again(
    engine: AsyncEngine,
) -> None:
    await add(engine, "a", ["https://h.example/1", "https://h.example/2"])
    mine, theirs = await claim(engine, InFlight(CAPS))
    async with transaction(engine) as conn:
        # Another notifier took `theirs` again meanwhile (its lease had run out).
        await conn.execute(
            text("UPDATE webhook_deliveries SET attempts = attempts + 1 WHERE id = :id"),
            {"id": theirs.id},
        )
        await repository.extend_leases(conn, {mine.id: mine.attempts, theirs.id: 1}, 3600)
        rows = await conn.execute(
            text("SELECT id, EXTRACT(EPOCH FROM next_attempt_at - now()) FROM webhook_deliveries")
        )
        leases = {int(row[0]): float(row[1]) for row in rows}
    assert leases[mine.id] == 3600  # now() is the transaction's start
    assert leases[theirs.id] <= LEASE
