"""The one backoff helper (services/common/retry.py) and bus.settle's closed set of verdicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common import bus, retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays asked of asyncio.sleep by the helper (which then returns at once)."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return delays


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = retry.Backoff(first=0.1, cap=0.5)
    assert [backoff.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next_delay() == 0.1


def failing(times: int, error: type[Exception] = ConnectionError) -> Any:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error(f"failure {calls}")
        return "done"

    return call


async def test_retry_returns_once_the_call_succeeds(slept: list[float]) -> None:
    seen: list[BaseException] = []
    result = await retry.retry(
        failing(3), on=ConnectionError, first=0.2, cap=5.0, on_failure=seen.append
    )
    assert result == "done"
    assert slept == [0.2, 0.4, 0.8]
    assert [str(err) for err in seen] == ["failure 1", "failure 2", "failure 3"]


async def test_retry_gives_up_once_its_sleeps_reach_the_budget(slept: list[float]) -> None:
    """The notifier's record: six tries, then the error (sleeps of 0.2 .. 3.2 s, 6.2 s)."""
    with pytest.raises(ConnectionError, match="failure 6"):
        await retry.retry(failing(10), on=ConnectionError, first=0.2, cap=5.0, give_up_after=6.0)
    assert slept == [0.2, 0.4, 0.8, 1.6, 3.2]


async def test_retry_lets_other_errors_through_at_once(slept: list[float]) -> None:
    with pytest.raises(ValueError, match="failure 1"):
        await retry.retry(failing(1, ValueError), on=ConnectionError, first=0.2, cap=5.0)
    assert slept == []


class Message:
    def __init__(self) -> None:
        self.settled: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))


async def test_settle_does_what_each_verdict_says() -> None:
    msg = Message()
    for verdict in bus.Verdict:
        await bus.settle(msg, verdict, delay=1.0)  # type: ignore[arg-type]
    assert msg.settled == [("ack", None), ("nak", 1.0), ("term", None)]


async def test_settle_refuses_a_word_it_does_not_know() -> None:
    """It used to terminate the message (drop it for good) for any unknown word."""
    msg = Message()
    with pytest.raises(AssertionError):
        await bus.settle(msg, "akc", delay=None)  # type: ignore[arg-type]
    assert msg.settled == []
