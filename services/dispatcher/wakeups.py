"""Why the dispatcher was woken: work that may be due now, or only work due later.

New tasks of switched-on queues notify `due_in:<seconds>` (migration 0007). Tasks due later
than the dispatcher's next planned pass need no pass now, only an earlier timer: a tenant
adding tasks for tomorrow, one POST at a time, costs the dispatchers no queries.
Every other notification (a queue changed, a call ended, a reconnect) means "look now".
"""

from __future__ import annotations

import asyncio
import contextlib
import time

DUE_IN = "due_in:"


class Wakeups:
    def __init__(self, lookahead_seconds: float = 0.0) -> None:
        # Work is claimed this long before it is due (DispatcherSettings.lookahead_seconds).
        self._lookahead = lookahead_seconds
        self._event = asyncio.Event()
        self._look_now = False
        self._earliest_due: float | None = None  # time.monotonic() of announced work

    def notify(self, payload: str) -> None:
        """A notification from PostgreSQL (or the dispatcher itself)."""
        due_in = _due_in(payload)
        if due_in is None or due_in <= self._lookahead:
            self._look_now = True
        else:
            due = time.monotonic() + due_in - self._lookahead
            self._earliest_due = due if self._earliest_due is None else min(self._earliest_due, due)
        self._event.set()

    def look_now(self) -> None:
        self.notify("")

    def clear(self) -> None:
        """At the start of a pass: the pass sees everything committed before it."""
        self._event.clear()
        self._look_now = False
        self._earliest_due = None

    async def sleep(self, seconds: float) -> None:
        """Sleep up to `seconds`; return early when there may be work, or when announced work
        falls due before then."""
        deadline = time.monotonic() + seconds
        while not self._look_now:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=remaining)
            self._event.clear()
            if self._earliest_due is not None:
                deadline = min(deadline, self._earliest_due)
                self._earliest_due = None


def _due_in(payload: str) -> float | None:
    if not payload.startswith(DUE_IN):
        return None
    try:
        return float(payload.removeprefix(DUE_IN))
    except ValueError:
        return None
