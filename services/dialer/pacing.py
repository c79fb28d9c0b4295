"""New calls per second, as trunks count them: at most N calls in any window of N / rate
seconds (N = the rate rounded down, at least 1; 1 s for a rate of 1 or more).

A sliding window, not a smoothing bucket of one: below the cap a call starts when it is due,
whatever came just before it (200 calls due at the same second with a cap of 2,000 all start
at once; a bucket of one spaced them 0.5 ms apart, the 200th 100 ms late). Above the cap the
calls past the window's count wait for the window to move. A start is reserved before the
call is marked dialed, so that nothing is left to wait for between the mark and the INVITE.
"""

from __future__ import annotations

import math
from collections import deque


class Pacer:
    def __init__(self, calls_per_second: float) -> None:
        self._count = max(1, math.floor(calls_per_second)) if calls_per_second else 0
        self._window = self._count / calls_per_second if calls_per_second else 0.0
        # The start times reserved last (at most _count), in the order reserved.
        self._starts: deque[float] = deque(maxlen=self._count or None)

    def reserve(self, at: float) -> float:
        """Reserve a start at `at` (seconds, any clock, reservations in time order) or as
        soon after it as the cap allows; the time reserved. Without a cap: `at`."""
        if not self._count:
            return at
        start = at
        if len(self._starts) == self._count:
            start = max(at, self._starts[0] + self._window)
        self._starts.append(start)
        return start
