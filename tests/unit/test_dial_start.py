"""What lies between a committed "dialed" mark and the phones' first INVITE: nothing that
can wait. The backend builds the call while it is recorded and the pacing slot is taken
before the mark; after the commit the backend sends at once, in the same event-loop turn."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.dialer.backend import CallPlan, CallReport, OnConnected
from services.dialer.consumer import Dialer, _ToDial
from services.dialer.pacing import Pacer
from services.dialer.repository import Recorded
from tests.unit.test_dial_timing import FakeMsg, request


class RecordingBackend:
    """A backend that notes, in one list with the dialer's own steps, what it was asked."""

    name = "fake"

    def __init__(self, steps: list[str], pacer: Pacer | None = None) -> None:
        self.steps = steps
        self.pacer = pacer or Pacer(0)

    def prepare_call(self, plan: CallPlan) -> None:
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


def dialer_with(backend: RecordingBackend, steps: list[str], marked: set[str]) -> Dialer:
    settings: Any = SimpleNamespace(report_retry_seconds=1.0, max_concurrent_calls=10)
    dialer = Dialer(cast(Any, None), cast(Any, None), cast(Any, backend), settings)
    record = Recorded(within=10.0, dial_by=datetime.now(UTC))

    async def record_calls(requests: Any, hold: float) -> dict[str, _ToDial]:
        steps.append("recording")
        return {r.call_uuid: _ToDial(None, record) for r in requests}

    async def mark_dialed(calls: dict[str, _ToDial], recorded_at: float, due: float) -> set[str]:
        steps.append(f"mark {sorted(calls)}")
        # Whatever else the loop has to do runs after this turn: it must come after the
        # INVITEs are sent.
        asyncio.get_running_loop().call_soon(steps.append, "next loop turn")
        return set(calls) & marked

    dialer._record_calls = record_calls  # type: ignore[method-assign]
    dialer._mark_dialed = mark_dialed  # type: ignore[method-assign]
    return dialer


async def test_calls_are_built_before_the_mark_and_sent_in_the_same_turn_as_it_returns() -> None:
    steps: list[str] = []
    backend = RecordingBackend(steps)
    dialer = dialer_with(backend, steps, marked={"uuid-1", "uuid-2"})
    msg = FakeMsg()

    await dialer._dial_when_due(cast(Any, msg), [request(1), request(2)])
    await asyncio.gather(*dialer._calls)

    # Built while they are recorded (the record's statements run between), then the
    # slots, the mark, and the INVITEs as the mark returns.
    assert steps[0] == "recording"
    assert steps[1:8] == [
        "prepare uuid-1",
        "prepare uuid-2",
        "reserve",
        "reserve",
        "mark ['uuid-1', 'uuid-2']",
        "start uuid-1",
        "start uuid-2",
    ]
    assert steps.index("next loop turn") > steps.index("start uuid-2")
    assert msg.verdicts == ["ack"]
    assert sorted(s for s in steps if s.startswith("place")) == ["place uuid-1", "place uuid-2"]


async def test_a_prepared_call_not_marked_is_forgotten_and_never_started() -> None:
    steps: list[str] = []
    backend = RecordingBackend(steps)
    dialer = dialer_with(backend, steps, marked={"uuid-1"})  # uuid-2 missed its deadline

    await dialer._dial_when_due(cast(Any, FakeMsg()), [request(1), request(2)])
    await asyncio.gather(*dialer._calls)

    assert "start uuid-1" in steps and "start uuid-2" not in steps
    assert "forget uuid-2" in steps and "forget uuid-1" not in steps
    assert "place uuid-2" not in steps


async def test_calls_over_the_cap_get_a_mark_of_their_own_at_their_later_start() -> None:
    steps: list[str] = []
    backend = RecordingBackend(steps, Pacer(2))  # 2 calls in any second
    dialer = dialer_with(backend, steps, marked={"uuid-1", "uuid-2", "uuid-3"})
    slept: list[float] = []

    async def until_mark(start: float) -> None:
        slept.append(start)  # not waited for: only the starts asked for are checked

    dialer._until_mark = until_mark  # type: ignore[method-assign]
    due_ms = 1_800_000_000_000
    requests = [request(i, due_ms) for i in (1, 2, 3)]

    await dialer._dial_when_due(cast(Any, FakeMsg()), requests)
    await asyncio.gather(*dialer._calls)

    marks = [s for s in steps if s.startswith("mark")]
    assert marks == ["mark ['uuid-1', 'uuid-2']", "mark ['uuid-3']"]
    # The third call waits for the window to move (the due time itself is capped at
    # MAX_HOLD_SECONDS from now, so only the difference is checked).
    assert slept[1] - slept[0] == pytest.approx(1.0)
    assert steps.index("start uuid-3") > steps.index("mark ['uuid-3']")


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


async def test_a_call_on_a_tenants_own_account_is_built_again_with_it() -> None:
    steps: list[str] = []
    plans: list[CallPlan] = []
    backend = RecordingBackend(steps)
    backend.prepare_call = plans.append  # type: ignore[method-assign,assignment]
    dialer = dialer_with(backend, steps, marked={"uuid-1"})
    record = Recorded(within=10.0, dial_by=datetime.now(UTC))

    async def own_account(requests: Any, hold: float) -> dict[str, _ToDial]:
        return {"uuid-1": _ToDial(("acme", "secret"), record)}

    dialer._record_calls = own_account  # type: ignore[method-assign]
    await dialer._dial_when_due(cast(Any, FakeMsg()), [request(1)])
    await asyncio.gather(*dialer._calls)

    assert [plan.account for plan in plans] == [None, ("acme", "secret")]
    assert steps.index("forget uuid-1") < steps.index("start uuid-1")
