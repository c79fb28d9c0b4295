"""The SIP stack's one timer heap (services/dialer/sip/timers.py): what the transaction timers
(RFC 3261 Timer A/B/E/F), ring timeouts and maximum call durations rely on. Every wait is for
a positive signal (a later timer's callback), never a fixed sleep."""

from __future__ import annotations

import asyncio
from typing import Any

from services.dialer.sip.timers import Timers


async def test_timers_fire_in_time_order_and_ties_in_creation_order() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[str] = []
    done: asyncio.Future[None] = loop.create_future()
    now = loop.time()

    def last() -> None:
        fired.append("third")
        done.set_result(None)

    timers.call_at(now + 0.003, last)
    timers.call_at(now + 0.001, fired.append, "first")
    timers.call_at(now + 0.002, fired.append, "second")
    timers.call_at(now + 0.001, fired.append, "first, created later")

    await done

    assert fired == ["first", "first, created later", "second", "third"]
    assert len(timers) == 0


async def test_a_cancelled_timer_never_fires() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[str] = []
    done: asyncio.Future[None] = loop.create_future()
    cancelled = timers.call_later(0.001, fired.append, "cancelled")
    timers.call_later(0.002, done.set_result, None)  # after the cancelled one's time
    timers.cancel(cancelled)
    timers.cancel(cancelled)  # twice: a no-op

    await done

    assert fired == []


async def test_an_earlier_timer_set_after_a_later_one_fires_first() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    late = timers.call_later(3600, lambda: None)
    done: asyncio.Future[None] = loop.create_future()
    timers.call_later(0.001, done.set_result, None)

    await done  # would hang (the test's timeout) if only the hour's timer were armed

    assert len(timers) == 1
    timers.cancel(late)
    assert len(timers) == 0


async def test_live_timers_fire_when_most_were_cancelled_and_the_heap_rebuilt() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[int] = []
    now = loop.time()
    entries = [timers.call_at(now + 0.001 + i / 100_000, fired.append, i) for i in range(200)]
    for i, entry in enumerate(entries):
        if i % 4:  # 150 of 200: past the rebuild's threshold
            timers.cancel(entry)
    assert len(timers) == 50
    done: asyncio.Future[None] = loop.create_future()
    timers.call_at(now + 0.01, done.set_result, None)

    await done

    assert fired == list(range(0, 200, 4))


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    timers = Timers(loop)
    done: asyncio.Future[None] = loop.create_future()
    now = loop.time()

    def fail() -> None:
        raise RuntimeError("boom")

    timers.call_at(now + 0.001, fail)
    timers.call_at(now + 0.001, done.set_result, None)  # due in the same turn
    later: asyncio.Future[None] = loop.create_future()
    timers.call_at(now + 0.002, later.set_result, None)

    await done
    await later  # the heap is still armed after the failure

    assert [str(context["exception"]) for context in reported] == ["boom"]
    loop.set_exception_handler(None)
