"""Exponential backoff, the one way the services wait after a failure.

Two shapes of loop use it. A call retried until it succeeds (publish, a write, a consumer
to create) uses `retry`; a long-running loop that backs off after a failed pass and goes
back to full speed after a good one (the claim loop, the outbox, a LISTEN connection) keeps
a `Backoff` and asks it for the next delay, because it sleeps in its own way (the
dispatcher's sleep is cut short by a notification). tenacity and backoff are decorators
around one call: they fit the first shape and not the second, so this small helper serves
both and the delays stay the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays that double from `first` up to `cap`, until `reset`."""

    first: float
    cap: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def next_delay(self) -> float:
        """The delay to wait now; the next one is twice as long (at most `cap`)."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._next = self.first


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    first: float,
    cap: float,
    give_up_after: float | None = None,
    on_failure: Callable[[BaseException], None] | None = None,
) -> T:
    """`await call()` until it returns, sleeping with a `Backoff` after each failure of a
    type in `on`. Once the sleeps add up to `give_up_after` seconds (None: never), the next
    failure is raised. `on_failure` sees each failure that is retried (to log it)."""
    backoff = Backoff(first, cap)
    waited = 0.0
    while True:
        try:
            return await call()
        except on as err:
            if give_up_after is not None and waited >= give_up_after:
                raise
            if on_failure is not None:
                on_failure(err)
            delay = backoff.next_delay()
            await asyncio.sleep(delay)
            waited += delay
