"""One callback as third-party call control, RFC 3725 flow IV (section 4.4):

1. INVITE every A number at once, without SDP; the first 2xx wins, the rest are CANCELled
   and finish in the background (see _ring_a): nothing below waits for them.
2. ACK A at once with a "black hole" answer (inactive media), so A's phone never waits on us.
3. INVITE B without SDP; B's 2xx carries B's offer.
4. re-INVITE A with B's offer; ACK A; ACK B with A's answer. A and B now talk to each other.
5. The first BYE (A, B, or ours at the maximum duration) ends the other leg with our BYE.

Flow I (A's offer to B, A's ACK held until B answers) fails when B rings long: A's phone gives
up on its unacknowledged 2xx after 64*T1 = 32 s.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from services.common.vocabulary import CallOutcome
from services.dialer.backend import CallPlan, CallReport, OnConnected
from services.dialer.sip.leg import Account, Caller, OutboundLeg, new_call_id
from services.dialer.sip.sdp import black_hole_answer, media_lines, with_origin
from services.dialer.sip.ua import UserAgent

log = logging.getLogger(__name__)

# A leg's result (see leg._result_of) as the callback's outcome; any other result is an error.
_A_FAILED = {
    "busy": CallOutcome.A_BUSY,
    "no_answer": CallOutcome.A_NO_ANSWER,
    "rejected": CallOutcome.A_REJECTED,
}
_B_FAILED = {
    "busy": CallOutcome.B_BUSY,
    "no_answer": CallOutcome.B_NO_ANSWER,
    "rejected": CallOutcome.B_REJECTED,
}


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(leg: OutboundLeg) -> str:
    response = leg.final_response or "no response"
    return f"{leg.role.upper()} {leg.number}: {leg.result.replace('_', ' ')} ({response})"


class Callback:
    def __init__(
        self,
        ua: UserAgent,
        plan: CallPlan,
        account: Account | None,
        *,
        assert_identity: bool,
        ring_timeout: float,
        max_call: float,
    ) -> None:
        caller = Caller(plan.caller_id_name, plan.caller_id_number, assert_identity)
        self.ua = ua
        self.plan = plan
        host = ua.transport.local.host
        self.a_legs = [
            OutboundLeg(ua, "a", n, caller, account, new_call_id(plan.call_uuid, f"a{i}", host))
            for i, n in enumerate(plan.a_numbers)
        ]
        self.b = OutboundLeg(
            ua, "b", plan.b_number, caller, account, new_call_id(plan.call_uuid, "b", host)
        )
        self.ring_timeout = ring_timeout
        self.max_call = max_call
        self.started = _now()
        self.connected_at: datetime | None = None
        for leg in self.a_legs:
            leg.prepare_invite()  # the INVITEs built now, sent at start
            ua.transport.reach(leg.destination)
        self._sent = False
        # The losing A legs, each finishing its INVITE (and, if it answered anyway, its
        # ACK and BYE) on its own: awaited only before the report (see run).
        self._losers: list[asyncio.Future[None]] = []

    def start(self) -> None:
        """Send every A number's INVITE now, without waiting for anything (the call was
        built ahead of its due time): what the phones see of a callback first."""
        if not self._sent:
            self._sent = True
            self.started = _now()
            for leg in self.a_legs:
                leg.send_invite()

    def legs(self) -> list[OutboundLeg]:
        legs = list(self.a_legs)
        if self.b.transaction is not None:
            legs.append(self.b)
        return legs

    def report(self, outcome: str, comment: str, ended: datetime | None = None) -> CallReport:
        return CallReport(
            outcome=outcome,
            comment=comment,
            started=self.started,
            ended=ended or _now(),
            legs=tuple(leg.record() for leg in self.legs()),
            connected_at=self.connected_at,
        )

    async def run(self, on_connected: OnConnected) -> CallReport:
        self.start()
        try:
            outcome, comment = await self._connect(on_connected)
        finally:
            ended = _now()
            # The call is over; the record waits for the losing A legs' own ends (a late 487,
            # or a 200 that crossed our CANCEL, ACKed and hung up), so that it has their final
            # responses and no task of this call outlives it. Bounded by their transactions:
            # 64*T1 after the CANCEL at most (OutboundLeg.ring).
            await self._losers_finished()
        return self.report(outcome, comment, ended)

    async def _connect(self, on_connected: OnConnected) -> tuple[str, str]:
        """The callback itself, up to its end: (outcome, comment) for the report."""
        a = await self._ring_a()
        if a is None:
            primary = self.a_legs[0]
            outcome = _A_FAILED.get(primary.result, CallOutcome.ERROR)
            return outcome, "; ".join(_describe(leg) for leg in self.a_legs)

        if not a.answer_sdp:
            a.ack()
            await a.hang_up("system")
            return CallOutcome.ERROR, f"A {a.number} answered without an SDP offer"
        a.ack(black_hole_answer(a.answer_sdp, a.origin.next()))

        # A hanging up while B rings stops B's ringing.
        a.on_remote_hangup = lambda: self.b.stop("other")
        b_answered = await self.b.ring(self.ring_timeout)
        if a.remote_hangup.is_set():
            if b_answered:
                self.b.ack(black_hole_answer(self.b.answer_sdp, self.b.origin.next()))
                await self.b.hang_up("a")
            a.hangup_by = "a"
            self.b.result = "cancelled" if not b_answered else self.b.result
            return CallOutcome.B_NO_ANSWER, f"A {a.number} hung up while B rang"
        if not b_answered:
            await a.hang_up("system")
            outcome = _B_FAILED.get(self.b.result, CallOutcome.ERROR)
            return outcome, _describe(self.b)
        if not self.b.answer_sdp:
            self.b.ack()
            await asyncio.gather(a.hang_up("system"), self.b.hang_up("system"))
            return CallOutcome.ERROR, f"B {self.b.number} answered without an SDP offer"

        # A gets B's offer (under our origin towards A); B gets A's answer (ours towards B).
        offer = with_origin(self.b.answer_sdp, a.origin.next(), len(media_lines(a.answer_sdp)))
        answer = await a.reinvite(offer)
        if answer.status >= 300 or not answer.body:
            self.b.ack(black_hole_answer(self.b.answer_sdp, self.b.origin.next()))
            await asyncio.gather(a.hang_up("system"), self.b.hang_up("system"))
            if a.remote_hangup.is_set():
                return CallOutcome.ERROR, f"A {a.number} hung up as B answered"
            reason = f"{answer.status} {answer.reason}"
            return CallOutcome.ERROR, f"A {a.number} refused B's media ({reason})"
        self.b.ack(with_origin(answer.body, self.b.origin.next()))
        self.connected_at = _now()
        await on_connected()
        return await self._talk(a)

    async def _ring_a(self) -> OutboundLeg | None:
        """Ring every A number at once; the first to answer wins at once, the others are
        CANCELled and finish in the background (_drop).

        The winner is returned as soon as it answers, not when the losers are done: a phone
        may send its 487 long after our CANCEL (RFC 3261 9.2 sets no deadline), and the
        winner's 2xx must be ACKed (and B dialled) now, or its phone retransmits the 2xx and
        gives up on the call after 64*T1.
        """
        if len(self.a_legs) == 1:
            leg = self.a_legs[0]
            return leg if await leg.ring(self.ring_timeout) else None
        ringing = {asyncio.ensure_future(leg.ring(self.ring_timeout)): leg for leg in self.a_legs}
        pending = set(ringing)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # In the A numbers' order when several answered in the same turn.
            answered = [leg for task, leg in ringing.items() if task in done and task.result()]
            if answered:
                winner = answered[0]
                for task, leg in ringing.items():
                    if leg is not winner:
                        leg.stop("other")
                        self._losers.append(asyncio.ensure_future(self._drop(leg, task)))
                return winner
        return None

    async def _drop(self, leg: OutboundLeg, ringing: asyncio.Future[bool]) -> None:
        """A losing A leg, stopped: its INVITE ends by itself (487, ACKed by its transaction;
        or the leg gives up 64*T1 after the CANCEL). If it answered anyway (a 2xx that crossed
        our CANCEL, or in the same turn as the winner), it is ACKed and hung up (RFC 3261
        15: a 2xx's dialog is ended with a BYE)."""
        await ringing
        if leg.dialog is not None:
            leg.ack(black_hole_answer(leg.answer_sdp, leg.origin.next()))
            await leg.hang_up("system")

    async def _losers_finished(self) -> None:
        if not self._losers:  # one A number, or none lost: no gather (a future) at all
            return
        results = await asyncio.gather(*self._losers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error(
                    "losing A leg failed",
                    exc_info=result,
                    extra={"action": "sip_error", "call": self.plan.call_uuid},
                )

    async def _talk(self, a: OutboundLeg) -> tuple[str, str]:
        b = self.b
        loop = asyncio.get_running_loop()
        # One future, ended by the first BYE or the maximum duration: not a task per leg
        # waiting on its event plus asyncio.wait, a thousand times over at a thousand calls.
        ended: asyncio.Future[str] = loop.create_future()

        def end(by: str) -> None:
            if not ended.done():
                ended.set_result(by)

        for leg, by in ((a, "a"), (b, "b")):
            if leg.remote_hangup.is_set():  # a BYE that came before the talk began
                end(by)
        a.on_remote_hangup = lambda: end("a")
        b.on_remote_hangup = lambda: end("b")
        timers = self.ua.timers
        timer = timers.call_later(self.max_call, end, "system")
        try:
            by = await ended
        finally:
            timers.cancel(timer)
        a.hangup_by = b.hangup_by = by
        # Our BYE to each leg still up: usually one, the phone that hung up has ended; then
        # awaited directly, not through gather's task per leg (two tasks and their wake-ups,
        # a thousand times over at a thousand calls).
        up = [leg for leg in (a, b) if leg.dialog is not None and leg.ended is None]
        if len(up) == 1:
            await up[0].hang_up(by)
        elif up:
            await asyncio.gather(*(leg.hang_up(by) for leg in up))
        confirmed = a.teardown_confirmed and b.teardown_confirmed
        comment = "" if confirmed else "teardown not confirmed by every phone"
        return CallOutcome.CONNECTED, comment
