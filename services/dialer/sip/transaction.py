"""Client transactions (RFC 3261 17.1): retransmissions, timeouts and the ACK of non-2xx.

Timers are entries in the user agent's one timer heap (timers.py) rather than a task or a
loop handle per transaction: a thousand calls at once keep several thousand transactions
alive. One timer per transaction at a time: it fires at the next retransmission or at the
timeout, whichever comes first (a burst of INVITEs at a due second scheduled two each before).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from services.dialer.sip import counters
from services.dialer.sip.message import Address, Message
from services.dialer.sip.timers import Timer, Timers

T1 = 0.5  # RTT estimate (RFC 3261 17.1.1.1)
T2 = 4.0  # longest retransmit interval of non-INVITE requests
T4 = 5.0  # longest a message stays in the network


def timeout_response(request: Message, reason: str = "Request Timeout") -> Message:
    """The 408 a transaction reports to its user when no final response came (17.1.1.2)."""
    response = Message(status=408, reason=reason)
    response.headers = [("Call-ID", request.call_id), ("CSeq", request.get("CSeq"))]
    return response


# A transaction after its final response, for the 64*T1 its copies may still come: an
# INVITE's non-2xx is acknowledged again (its ACK, host and port), anything else absorbed
# (no ACK). Only this is kept, not the request, the responses and their queue: at 200
# callbacks a second some 32,000 transactions linger, and whole, they were most of what the
# dialer's full garbage collections walked (they grew to 100-450 ms within the first 32 s of
# a run). A plain tuple of plain values, which the collector stops tracking (a NamedTuple it
# would track).
Lingering = tuple[bytes | None, str, int]


def ignore(_: Message) -> None:
    """An on_provisional for users that wait only for the final response."""


class Responses:
    """The responses of one transaction, in arrival order, for the one task that waits for
    them: put_nowait / get / empty as asyncio.Queue, without its per-queue loop binding and
    waiter bookkeeping (a thousand callbacks at once make thousands of transactions)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Message) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Message:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class ClientTransaction:
    """One request we sent. Responses go to `responses` in arrival order; a final response
    (or a synthesized 408 on timeout or transport failure) ends it for its user."""

    def __init__(
        self,
        request: Message,
        destination: Address,
        send: Callable[[bytes, Address], None],
        reliable: bool,
        t1: float = T1,
    ) -> None:
        self.request = request
        self.destination = destination
        self.key = (request.branch, request.method)
        self.responses = Responses()
        self.provisional: Message | None = None
        self.final: Message | None = None
        self.retransmissions = 0
        self._send = send
        self._reliable = reliable
        self._t1 = t1
        self._data = request.encode()
        self._interval = t1
        # The one timer: Timer A/E (retransmit, unreliable transports only) and Timer B/F
        # (give up), as the earlier of the two; None once neither runs.
        self._timers: Timers | None = None  # set by start
        self._timer: Timer | None = None
        self._retransmit_at = 0.0  # loop time of the next retransmission; 0: none
        self._timeout_at = 0.0
        self._ack: bytes | None = None
        self.on_end: Callable[[ClientTransaction], None] = lambda _: None
        # Where provisional responses go: by default into `responses`. A user that only notes
        # them sets its own (a no-op, or a note): each one queued wakes the waiting task, and
        # a callback gets four (100 and 180 from each phone) that nothing waits for.
        self.on_provisional: Callable[[Message], None] = self.responses.put_nowait
        # Called with the time to linger once the final response came; by default the whole
        # transaction lingers, then ends (UserAgent keeps only its `lingering()` part).
        self.on_linger: Callable[[ClientTransaction, float], None] = self._linger

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def start(self, timers: Timers | None = None) -> None:
        """Send the request; `timers`: the user agent's (UserAgent.timers), else a heap of
        the transaction's own."""
        if timers is None:
            timers = Timers(asyncio.get_running_loop())
        self._timers = timers
        self._send(self._data, self.destination)
        now = timers.time()
        # Timer B (INVITE) / Timer F (non-INVITE): 64*T1 without a final response, on every
        # transport; Timer A / E only where messages can be lost (RFC 3261 17.1.1.2, 17.1.2.2).
        self._timeout_at = now + 64 * self._t1
        self._retransmit_at = 0.0 if self._reliable else now + self._interval
        self._arm(timers)

    def _arm(self, timers: Timers) -> None:
        at = min(self._retransmit_at or self._timeout_at, self._timeout_at)
        self._timer = timers.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        timers = self._timers
        if self.final is not None or timers is None:
            return
        if timers.time() >= self._timeout_at:
            self.fail(timeout_response(self.request))
            return
        if self._retransmit_at:
            self._retransmit(timers)
        self._arm(timers)

    def _retransmit(self, timers: Timers) -> None:
        self.retransmissions += 1
        counters.SIP_RETRANSMISSIONS.inc()
        self._send(self._data, self.destination)
        # INVITE: Timer A doubles without bound; non-INVITE: Timer E is capped at T2 (17.1.2.2).
        self._interval = self._interval * 2 if self.is_invite else min(self._interval * 2, T2)
        self._retransmit_at = timers.time() + self._interval

    def fail(self, response: Message) -> None:
        """End with a synthesized final response (timeout, transport error)."""
        self._finish(response)
        self.responses.put_nowait(response)
        self.on_end(self)

    def _finish(self, final: Message) -> None:
        self.final = final
        self._stop_timers()
        # The user's hook (often a bound method of an object holding this transaction) is
        # dropped: no reference cycle keeps either alive for the garbage collector to find.
        self.on_provisional = ignore

    def _stop_timers(self) -> None:
        if self._timer is not None and self._timers is not None:
            self._timers.cancel(self._timer)
            self._timer = None
        self._retransmit_at = self._timeout_at = 0.0

    def receive(self, response: Message) -> None:
        if response.status < 200:
            if self.final is None:
                self.provisional = self.provisional or response
                if self.is_invite:
                    # Proceeding: an INVITE is no longer retransmitted, and Timer B, which
                    # runs only in Calling, stops on every transport, TCP included (17.1.1.2);
                    # the user's ring timeout (with CANCEL) takes over.
                    self._stop_timers()
                self.on_provisional(response)
            return
        if self.is_invite and response.status >= 300:
            if self._ack is None:
                self._ack = self._non_2xx_ack(response)
            # Every copy of the final response is acknowledged again (17.1.1.2, Timer D).
            self._send(self._ack, self.destination)
        if self.final is not None:
            if self.is_invite and response.status < 300:
                # More 2xx: a retransmission or another fork's answer, for the user to ACK.
                self.responses.put_nowait(response)
            return
        self._finish(response)
        self.responses.put_nowait(response)
        # Stay to absorb retransmissions: Timer D (INVITE non-2xx), Timer K (non-INVITE), or
        # RFC 6026's Accepted state for 2xx of an INVITE; all bounded by 64*T1.
        linger = 0.0 if self._reliable and not self.is_invite else 64 * self._t1
        self.on_linger(self, linger)

    def lingering(self) -> Lingering:
        """What the transaction still needs once its final response came."""
        return (self._ack, self.destination.host, self.destination.port)

    def _linger(self, _: ClientTransaction, seconds: float) -> None:
        asyncio.get_running_loop().call_later(seconds, self.on_end, self)

    def _non_2xx_ack(self, response: Message) -> bytes:
        """The ACK of a non-2xx final response belongs to the INVITE's transaction: same
        branch, Request-URI and Route, the response's To (with tag) (RFC 3261 17.1.1.3)."""
        ack = Message(method="ACK", uri=self.request.uri)
        for name in ("Via", "Max-Forwards", "From"):
            ack.headers.append((name, self.request.get(name)))
        ack.headers.append(("To", response.get("To")))
        ack.headers.append(("Call-ID", self.request.call_id))
        ack.headers.append(("CSeq", f"{self.request.cseq[0]} ACK"))
        ack.headers.extend((name, value) for name, value in self.request.headers if name == "Route")
        return ack.encode()
