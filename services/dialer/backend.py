"""The telephony backend interface: how the dialer places one callback, whatever the network.

A backend calls the A numbers (all at once; the first to answer takes the call), then B,
bridges them, and reports every leg. Backends: `simulated` (here), `sip` (separate module).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from services.common.timefmt import format_utc


# NamedTuples, not frozen dataclasses: as immutable, and built five times faster (a frozen
# dataclass sets each field through object.__setattr__), several times per call.
class CallPlan(NamedTuple):
    call_uuid: str
    a_numbers: tuple[str, ...]  # a_number first, then the extended A numbers
    b_number: str
    caller_id_name: str = ""
    caller_id_number: str = ""
    extension_id: int = 0
    # The tenant's own SIP account for the extension (username, password), read by the
    # dialer from PostgreSQL; None: the operator's default account (extension 0 only).
    account: tuple[str, str] | None = None
    # The task's own limits, in seconds (callback_params.ring_timeout, call_duration); 0:
    # the backend's. A backend never goes past its own (see limit()).
    ring_timeout: float = 0.0
    max_call: float = 0.0


def limit(requested: float, own: float) -> float:
    """The limit a call runs with: the task's if it set one, capped by the backend's own
    (the longest call must fit in the dispatcher's attempt lease)."""
    return min(requested, own) if requested > 0 else own


class Leg(NamedTuple):
    role: str  # "a" or "b"
    number: str
    # "answered", "busy", "no_answer", "rejected", "cancelled" or "error".
    result: str
    ring_started: datetime | None = None
    answered: datetime | None = None
    ended: datetime | None = None
    hangup_by: str = ""
    # SIP only: the leg's Call-ID, its final response ("486 Busy Here") and whether the
    # phone confirmed the teardown (answered our BYE, or sent its own).
    sip_call_id: str = ""
    final_response: str = ""
    teardown_confirmed: bool = False

    def as_record(self) -> dict[str, Any]:
        ring = (self.answered or self.ended) if self.ring_started else None
        return {
            "role": self.role,
            "number": self.number,
            "result": self.result,
            "ring_started_utc": format_utc(self.ring_started) if self.ring_started else "",
            "answered_utc": format_utc(self.answered) if self.answered else "",
            "ended_utc": format_utc(self.ended) if self.ended else "",
            "ring_seconds": _seconds(self.ring_started, ring),
            "talk_seconds": _seconds(self.answered, self.ended),
            "hangup_by": self.hangup_by,
            "sip_call_id": self.sip_call_id,
            "final_response": self.final_response,
            "teardown_confirmed": self.teardown_confirmed,
        }


class CallReport(NamedTuple):
    # "connected", "a_busy", "a_no_answer", "a_rejected", "b_busy", "b_no_answer",
    # "b_rejected" or "error".
    outcome: str
    comment: str
    started: datetime
    ended: datetime
    legs: tuple[Leg, ...] = ()
    connected_at: datetime | None = None
    # The limits the call ran with (set by the dialer, which knows them for every backend).
    ring_timeout: float = 0.0
    max_call: float = 0.0

    def as_record(self) -> dict[str, Any]:
        return {
            "legs": [leg.as_record() for leg in self.legs],
            "duration_seconds": _seconds(self.started, self.ended),
            "talk_seconds": _seconds(self.connected_at, self.ended),
            "ring_timeout": self.ring_timeout,
            "call_duration": self.max_call,
        }


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return round((end - start).total_seconds(), 3)


OnConnected = Callable[[], Awaitable[None]]


class TelephonyBackend(Protocol):
    """How the dialer uses a backend for one call: `prepare_call` when the call is recorded
    (before its due time: whatever can be built ahead is), `reserve_start` for its start under
    the backend's calls-per-second cap, then, once the call is marked dialed, `start_call`
    (sends what the phones see first, at once, without yielding) and `place_call` (the rest
    of the callback); `forget_call` for a prepared call that will not be dialed."""

    name: str

    def prepare_call(self, plan: CallPlan) -> None:
        """Build the call's first messages ahead of time (optional work: `place_call` builds
        whatever was not prepared)."""
        ...

    def reserve_start(self, at: float) -> float:
        """Reserve a new call's start at `at` (time.time()) or as soon after as the
        backend's calls-per-second cap allows; the time reserved."""
        ...

    def start_call(self, call_uuid: str) -> None:
        """Send a prepared call's first messages now; nothing for a call not prepared."""
        ...

    def forget_call(self, call_uuid: str) -> None:
        """Drop what prepare_call built for a call that will not be dialed."""
        ...

    async def place_call(self, plan: CallPlan, on_connected: OnConnected) -> CallReport:
        """Place the whole callback and return how it went; never raises for call failures."""
        ...
