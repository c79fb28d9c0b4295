"""Many timers on one event loop handle: the SIP stack's transaction and call timers.

A thousand callbacks at once keep thousands of timers (Timer A/B/E/F of every transaction,
each leg's ring timeout, each call's maximum duration), and most are cancelled before they
fire. As asyncio TimerHandles each costs two Python constructors, and the loop's heap
compares handles with a Python `__lt__` (~12 calls per push or pop): under cProfile the
timer machinery was about a tenth of the controller's time at 1,000 callbacks. Here a timer
is one small list in a heap of our own, compared in C, and the loop holds one handle, for
the earliest. Written by hand: asyncio has no cheaper timer, and no library offers one for
its loop.

Order and precision are the loop's: a timer fires in the first loop turn at or after its
time (the one handle is a `call_at` for the earliest), timers due together fire in the order
of their times, then of their creation.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

# [when, sequence number, callback, args]: lists, so that cancel() can clear the callback in
# place; the sequence number keeps comparisons away from the callbacks.
Timer = list[Any]
# The loop runs a handle up to its clock's resolution early (asyncio's _run_once): timers due
# by then fire in the same turn rather than re-arming for a few nanoseconds later.
_RESOLUTION = time.get_clock_info("monotonic").resolution


class Timers:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[Timer] = []
        self._sequence = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0  # when the one loop handle fires
        self._cancelled = 0  # cancelled timers still in the heap

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Timer:
        """Call `callback(*args)` at loop time `when` (as loop.call_at)."""
        timer: Timer = [when, next(self._sequence), callback, args]
        heapq.heappush(self._heap, timer)
        if self._handle is None or when < self._armed_at:
            self._arm(when)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> Timer:
        return self.call_at(self._loop.time() + delay, callback, *args)

    def time(self) -> float:
        return self._loop.time()

    def cancel(self, timer: Timer) -> None:
        """Stop a timer from firing (nothing if it fired or was cancelled already)."""
        if timer[2] is None:
            return
        timer[2] = timer[3] = None
        self._cancelled += 1
        # Cancelled timers wait in the heap for their time (a ring timeout: 60 s); once they
        # are most of it, it is rebuilt without them, as asyncio does with its own.
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2] is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def __len__(self) -> int:
        """Timers that will still fire."""
        return len(self._heap) - self._cancelled

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle = None
        now = self._loop.time() + _RESOLUTION
        try:
            # self._heap anew each time: a callback's cancel() may rebuild it.
            while self._heap and self._heap[0][0] <= now:
                timer = heapq.heappop(self._heap)
                callback, args = timer[2], timer[3]
                if callback is None:
                    self._cancelled -= 1
                    continue
                timer[2] = timer[3] = None  # fired: a later cancel() is a no-op
                try:
                    callback(*args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # as the loop does for a failing handle
                    self._loop.call_exception_handler(
                        {"message": "Exception in a SIP timer callback", "exception": exc}
                    )
        finally:
            while self._heap and self._heap[0][2] is None:  # no wake-up for a cancelled one
                heapq.heappop(self._heap)
                self._cancelled -= 1
            if self._heap and (self._handle is None or self._heap[0][0] < self._armed_at):
                self._arm(self._heap[0][0])
