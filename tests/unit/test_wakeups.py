"""The dispatcher's wake-ups: a pass now for work that may be due, only an earlier timer for
work announced as due later."""

from __future__ import annotations

import asyncio

import pytest

from services.dispatcher.wakeups import Wakeups

# Upper bound for "returned at once or at the announced time", not a speed claim: it only
# tells an early return from the 3600 s sleep these tests ask for.
WITHIN = 60.0


async def sleeping(wakeups: Wakeups, seconds: float = 3600.0) -> asyncio.Task[None]:
    task = asyncio.create_task(wakeups.sleep(seconds))
    await asyncio.sleep(0)  # let it start waiting
    return task


async def another_sleep_ends(seconds: float = 0.1) -> None:
    """The witness of a sleep that must go on: another one, started now for `seconds`, has
    ended. A wake-up of the first due before then would have ended it first (timers fire in
    order, and both sleeps go the same way from there), however late the loop runs them."""
    await asyncio.wait_for(Wakeups().sleep(seconds), WITHIN)


@pytest.mark.parametrize(
    "payload", ["", "dispatcher", "tasks", "due_in:0", "due_in:-12.5", "due_in:x"]
)
async def test_anything_but_work_due_later_ends_the_sleep(payload: str) -> None:
    wakeups = Wakeups()
    sleeper = await sleeping(wakeups)

    wakeups.notify(payload)

    await asyncio.wait_for(sleeper, WITHIN)


async def test_work_due_later_than_the_sleep_does_not_end_it() -> None:
    wakeups = Wakeups()
    sleeper = await sleeping(wakeups, 3600)

    wakeups.notify("due_in:7200")
    await another_sleep_ends()

    assert not sleeper.done()
    sleeper.cancel()


async def test_work_due_before_the_planned_pass_moves_the_timer() -> None:
    wakeups = Wakeups()
    sleeper = await sleeping(wakeups)

    wakeups.notify("due_in:3000")
    wakeups.notify("due_in:0.05")
    wakeups.notify("due_in:2000")

    await asyncio.wait_for(sleeper, WITHIN)


async def test_a_notification_before_the_sleep_is_not_lost() -> None:
    wakeups = Wakeups()
    wakeups.notify("dispatcher")  # arrived while a pass was running

    await asyncio.wait_for(wakeups.sleep(3600), WITHIN)


async def test_clear_forgets_what_the_pass_has_seen() -> None:
    wakeups = Wakeups()
    wakeups.notify("dispatcher")
    wakeups.notify("due_in:0.01")
    wakeups.clear()
    sleeper = await sleeping(wakeups)

    await another_sleep_ends()  # long past the 0.01 s announced before the clear

    assert not sleeper.done()
    sleeper.cancel()


async def test_work_due_within_the_lookahead_is_claimed_now() -> None:
    wakeups = Wakeups(lookahead_seconds=0.25)
    sleeper = await sleeping(wakeups)

    wakeups.notify("due_in:0.2")

    await asyncio.wait_for(sleeper, WITHIN)


async def test_work_due_later_wakes_the_lookahead_before_it() -> None:
    wakeups = Wakeups(lookahead_seconds=3599.9)
    sleeper = await sleeping(wakeups)

    wakeups.notify("due_in:3600")  # claimed 3599.9 s early: 0.1 s from now

    await asyncio.wait_for(sleeper, WITHIN)
