"""The sender starts only what its claims hand it, counts it by host and tenant, and forgets
both once their deliveries end: webhooks to random subdomains leave nothing behind. The
database and the receivers are stand-ins here (the claim itself: tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import SecretStr

from services.notifier import repository, sender
from services.notifier.limits import Room
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings

DELIVERIES = 1_000


async def until(condition: Callable[[], bool]) -> None:
    """Let the sender run until `condition` holds (the test's timeout bounds the wait)."""
    while not condition():  # noqa: ASYNC110 - the sender's state has no event to wait on
        await asyncio.sleep(0.01)


async def test_hosts_and_tenants_are_forgotten_once_their_deliveries_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(19)
    ids = itertools.count(1)
    claimed: list[Any] = []
    most_hosts = 0
    release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def no_database(engine: Any) -> AsyncIterator[None]:
        yield None

    async def claim_due(conn: Any, room: Room, *args: Any) -> list[Any]:
        """Up to what the room allows, each to a random subdomain of one of 3 tenants."""
        rows = []
        tenants = {f"tenant-{n}" for n in range(3)} - set(room.full_tenants)
        taken = dict.fromkeys(tenants, 0)
        for _ in range(min(room.total, DELIVERIES - len(claimed))):
            tenant = next(
                (t for t in sorted(tenants) if room.busy_tenants.get(t, 0) + taken[t] < 50), None
            )
            if tenant is None:
                break
            taken[tenant] += 1
            host = f"{rng.getrandbits(64):016x}.hooks.example"
            row = SimpleNamespace(
                id=next(ids), attempts=1, age_seconds=0.0, host=host, client_id=tenant,
                task_id=1, event="after", event_id="x", url=f"https://{host}/", body="{}",
            )  # fmt: skip
            rows.append(row)
        claimed.extend(rows)
        return rows

    async def post(self: Sender, row: Any) -> tuple[int, str, bool]:
        nonlocal most_hosts
        most_hosts = max(most_hosts, len(self.slots.hosts))
        await release.wait()
        return 200, "", False

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(sender, "transaction", no_database)
    monkeypatch.setattr(repository, "claim_due", claim_due)
    monkeypatch.setattr(repository, "seconds_until_next_due", nothing)
    for name in ("record_attempt", "finish", "retry_later", "extend_leases"):
        monkeypatch.setattr(repository, name, nothing)
    monkeypatch.setattr(Sender, "_post", post)
    settings = NotifierSettings.model_construct(
        database_url="unused", signing_key=SecretStr("unused")
    )
    no_engine, no_client = cast(Any, None), cast(Any, None)
    notifier = Sender(no_engine, no_client, settings, asyncio.Event())
    running = asyncio.create_task(notifier.run())

    # 150 in flight: 3 tenants at their cap of 50, each delivery to a host of its own.
    await until(lambda: len(notifier.slots) == 150)
    assert len(notifier.slots.hosts) == 150
    assert dict(notifier.slots.tenants) == {f"tenant-{n}": 50 for n in range(3)}
    release.set()
    await until(lambda: len(claimed) == DELIVERIES and len(notifier.slots) == 0)
    notifier.stop()
    await running
    await notifier.finished()

    assert (dict(notifier.slots.hosts), dict(notifier.slots.tenants)) == ({}, {})
    assert most_hosts <= 150
