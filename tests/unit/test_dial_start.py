"""What lies between a committed "dialed" mark and the phones' first INVITE: nothing that
can wait. The backend builds the calls while they are recorded and each call's start under
the calls-per-second cap is reserved before the mark; after the commit the backend sends at
once, in the same event-loop turn. Requests already due when they arrive are marked in the
record's own transaction. The database is faked at the repository's functions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.dialer import consumer, repository
from services.dialer.backend import CallPlan, CallReport, OnConnected
from services.dialer.consumer import Dialer
from services.dialer.pacing import Pacer
from services.dialer.repository import Recorded, Started
from tests.unit.test_dial_timing import FakeMsg, request


class RecordingBackend:
    """A backend that notes, in one list with the database's steps, what it was asked."""

    name = "fake"

    def __init__(self, steps: list[str], pacer: Pacer | None = None) -> None:
        self.steps = steps
        self.pacer = pacer or Pacer(0)
        self.plans: list[CallPlan] = []

    def prepare_call(self, plan: CallPlan) -> None:
        self.plans.append(plan)
        self.steps.append(f"prepare {plan.call_uuid}")

    def reserve_start(self, at: float) -> float:
        self.steps.append("reserve")
        return self.pacer.reserve(at)

    def start_call(self, call_uuid: str) -> None:
        self.steps.append(f"start {call_uuid}")

    def forget_call(self, call_uuid: str) -> None:
        self.steps.append(f"forget {call_uuid}")

    async def place_call(self, plan: CallPlan, on_connected: OnConnected) -> CallReport:
        self.steps.append(f"place {plan.call_uuid}")
        now = datetime.now(UTC)
        return CallReport(outcome="a_busy", comment="", started=now, ended=now)


def fake_database(
    monkeypatch: pytest.MonkeyPatch,
    steps: list[str],
    *,
    marked: set[str],
    accounts: dict[Any, tuple[str, str]] | None = None,
    within: float = 10.0,
) -> None:
    """Every call is recorded (to be dialed `within` seconds); `marked` are the ones whose
    mark succeeds. A deadline moved later is marked with the moved record."""
    record = Recorded(within=within, dial_by=datetime.now(UTC))

    @contextlib.asynccontextmanager
    async def transaction(engine: Any) -> AsyncIterator[None]:
        yield None
        steps.append("commit")
        # Whatever else the loop has to do runs after this turn: for a commit of marks, it
        # must come after the INVITEs are sent.
        asyncio.get_running_loop().call_soon(steps.append, "next loop turn")

    async def record_calls(conn: Any, new_calls: Any, *args: Any) -> Started:
        steps.append("record")
        return Started({c.call_uuid: record for c in new_calls}, set())

    async def tenant_accounts(conn: Any, pairs: Any) -> dict[Any, tuple[str, str]]:
        return accounts or {}

    async def mark_calls_dialed(conn: Any, calls: dict[str, Any], due_at: Any) -> set[str]:
        steps.append(f"mark {sorted(calls)}")
        moved = {uuid for uuid, recorded in calls.items() if recorded.dial_by == MOVED}
        return set(calls) & marked | moved

    async def extend_deadlines(
        conn: Any, calls: dict[str, tuple[Recorded, float]], longest_call_seconds: float
    ) -> dict[str, tuple[datetime, float]]:
        steps.append(f"extend {sorted(calls)}")
        return {uuid: (MOVED, seconds) for uuid, (_, seconds) in calls.items()}

    monkeypatch.setattr(consumer, "transaction", transaction)
    monkeypatch.setattr(repository, "record_calls", record_calls)
    monkeypatch.setattr(repository, "tenant_accounts", tenant_accounts)
    monkeypatch.setattr(repository, "mark_calls_dialed", mark_calls_dialed)
    monkeypatch.setattr(repository, "extend_deadlines", extend_deadlines)


# The deadline the fake database gives a record it moved later.
MOVED = datetime(2100, 1, 1, tzinfo=UTC)


def new_dialer(backend: RecordingBackend) -> Dialer:
    settings: Any = SimpleNamespace(
        report_retry_seconds=1.0,
        max_concurrent_calls=10,
        longest_call_seconds=60.0,
        ring_timeout_seconds=30.0,
        max_call_seconds=30.0,
    )
    dialer = Dialer(cast(Any, None), cast(Any, None), cast(Any, backend), settings)

    async def until_mark(start: float) -> None:
        pass  # not waited for: the order of the steps is what is checked

    dialer._until_mark = until_mark  # type: ignore[method-assign]
    return dialer


async def dial(dialer: Dialer, *requests: Any) -> FakeMsg:
    msg = FakeMsg()
    await dialer._dial_when_due(cast(Any, msg), list(requests))
    await asyncio.gather(*dialer._calls)
    return msg


def later_ms() -> int:
    """A due time after the request arrives (held, not overdue)."""
    return int((time.time() + 0.3) * 1000)


async def test_held_calls_are_built_before_the_mark_and_sent_as_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2"})
    due = later_ms()

    msg = await dial(new_dialer(RecordingBackend(steps)), request(1, due), request(2, due))

    mark = steps.index("mark ['uuid-1', 'uuid-2']")
    assert {"prepare uuid-1", "prepare uuid-2", "record"} <= set(steps[:mark])
    assert steps[mark - 2 : mark] == ["reserve", "reserve"]
    committed = steps.index("commit", mark)
    assert steps[committed : committed + 3] == ["commit", "start uuid-1", "start uuid-2"]
    assert steps.index("next loop turn", committed) > committed + 2
    assert msg.verdicts == ["ack"]
    assert sorted(s for s in steps if s.startswith("place")) == ["place uuid-1", "place uuid-2"]


async def test_overdue_calls_are_marked_in_the_records_transaction_and_sent_as_it_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2"})

    msg = await dial(new_dialer(RecordingBackend(steps)), request(1), request(2))

    assert steps[:10] == [
        "reserve",
        "reserve",
        "record",
        "prepare uuid-1",
        "prepare uuid-2",
        "mark ['uuid-1', 'uuid-2']",  # once every call is built
        "commit",
        "start uuid-1",
        "start uuid-2",
        "next loop turn",
    ]
    assert steps.count("commit") == 1  # one transaction for record and mark
    assert msg.verdicts == ["ack"]
    assert sorted(s for s in steps if s.startswith("place")) == ["place uuid-1", "place uuid-2"]


@pytest.mark.parametrize("overdue", [True, False])
async def test_a_prepared_call_not_marked_is_forgotten_and_never_started(
    monkeypatch: pytest.MonkeyPatch, overdue: bool
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1"})  # uuid-2 missed its deadline
    due = 0 if overdue else later_ms()

    await dial(new_dialer(RecordingBackend(steps)), request(1, due), request(2, due))

    assert "start uuid-1" in steps and "start uuid-2" not in steps
    assert "forget uuid-2" in steps and "forget uuid-1" not in steps
    assert "place uuid-2" not in steps


async def test_calls_over_the_cap_get_a_mark_of_their_own_at_their_later_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2", "uuid-3"})
    dialer = new_dialer(RecordingBackend(steps, Pacer(2)))  # 2 calls in any second
    starts: list[float] = []

    async def until_mark(start: float) -> None:
        starts.append(start)

    dialer._until_mark = until_mark  # type: ignore[method-assign]
    due = later_ms()

    await dial(dialer, *(request(i, due) for i in (1, 2, 3)))

    marks = [s for s in steps if s.startswith("mark")]
    assert marks == ["mark ['uuid-1', 'uuid-2']", "mark ['uuid-3']"]
    assert starts[1] - starts[0] == pytest.approx(1.0)  # waits for the window to move
    assert steps.index("start uuid-3") > steps.index("mark ['uuid-3']")


async def test_overdue_calls_over_the_cap_keep_their_reserved_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    fake_database(monkeypatch, steps, marked={"uuid-1", "uuid-2"})
    dialer = new_dialer(RecordingBackend(steps, Pacer(1)))

    await dial(dialer, request(1), request(2))

    # uuid-1 marked with its record; uuid-2 reserved a second later, marked then, alone.
    assert [s for s in steps if s.startswith("mark")] == ["mark ['uuid-1']", "mark ['uuid-2']"]
    assert steps.count("reserve") == 2


@pytest.mark.parametrize("overdue", [True, False])
async def test_a_call_the_cap_starts_after_its_records_deadline_gets_a_later_one_first(
    monkeypatch: pytest.MonkeyPatch, overdue: bool
) -> None:
    """Records are to be dialed within their hold and a grace of 2 s; a call the
    calls-per-second cap starts later (here 2.5 s) would miss its mark and wait for its
    attempt's lease to end (an hour by default). Its deadline is moved first, while the
    first call goes on at once; only calls near their deadline are moved."""
    steps: list[str] = []
    # uuid-2's mark succeeds only on a moved deadline.
    fake_database(monkeypatch, steps, marked={"uuid-1"}, within=2.0)
    dialer = new_dialer(RecordingBackend(steps, Pacer(0.4)))  # a call every 2.5 s
    sleeps: list[float] = []

    async def sleep_until(moment: float) -> None:
        sleeps.append(moment)  # the commit's wait for the start: not waited here

    dialer._sleep_until = sleep_until  # type: ignore[method-assign]
    due = 0 if overdue else later_ms()

    await dial(dialer, request(1, due), request(2, due))

    assert [s for s in steps if s.startswith("extend")] == ["extend ['uuid-2']"]
    assert steps.index("extend ['uuid-2']") < steps.index("mark ['uuid-2']")
    assert {"place uuid-1", "place uuid-2"} <= set(steps)


async def test_a_call_on_a_tenants_own_account_is_built_again_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    own = {("", 0): ("acme", "secret")}  # request() has no client id, extension 0
    fake_database(monkeypatch, steps, marked={"uuid-1"}, accounts=own)
    backend = RecordingBackend(steps)

    await dial(new_dialer(backend), request(1))  # overdue: not marked with the record

    assert [plan.account for plan in backend.plans] == [None, ("acme", "secret")]
    assert steps.index("forget uuid-1") < steps.index("mark ['uuid-1']")
    assert steps.index("mark ['uuid-1']") < steps.index("start uuid-1")


def test_the_pacer_costs_nothing_below_the_cap() -> None:
    pacer = Pacer(2000)
    assert [pacer.reserve(100.0) for _ in range(200)] == [100.0] * 200


def test_the_pacer_allows_the_rate_in_any_window_and_no_more() -> None:
    pacer = Pacer(3)
    starts = [pacer.reserve(10.0) for _ in range(7)]
    assert starts == [10.0, 10.0, 10.0, 11.0, 11.0, 11.0, 12.0]
    assert pacer.reserve(20.0) == 20.0  # the window moved on long ago


def test_a_fractional_rate_spaces_single_calls() -> None:
    pacer = Pacer(0.5)
    assert [pacer.reserve(0.0) for _ in range(3)] == [0.0, 2.0, 4.0]


def test_no_cap_means_no_wait() -> None:
    pacer = Pacer(0)
    assert [pacer.reserve(5.0) for _ in range(3)] == [5.0, 5.0, 5.0]
