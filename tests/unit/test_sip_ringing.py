"""A ringing leg notes provisional responses without waiting on them, and a leg stopped
before its phone rang sends its CANCEL when the first provisional response comes (RFC 3261
9.1: a CANCEL only after one), not never."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.dialer.sip.leg import Caller, OutboundLeg
from services.dialer.sip.message import Address, Message, parse
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

PHONE = Address("127.0.0.2", 5060)


def answer(request: Message, status: str, *, tag: bool = True) -> Message:
    """The phone's response to `request` (its Via, From, Call-ID and CSeq)."""
    to = request.get("To") + (";tag=phone" if tag else "")
    head = [f"SIP/2.0 {status}"]
    head += [f"{name}: {request.get(name)}" for name in ("Via", "From", "Call-ID", "CSeq")]
    head += [f"To: {to}", "Contact: <sip:phone@127.0.0.2:5060>", "Content-Length: 0"]
    return parse(("\r\n".join(head) + "\r\n\r\n").encode())


def setup() -> tuple[UserAgent, CapturingTransport, OutboundLeg]:
    transport = CapturingTransport()
    ua = UserAgent(transport, (Route("*", PHONE, "phones.test"),))
    return ua, transport, OutboundLeg(ua, "a", "1001", Caller(), None, "call-1@127.0.0.1")


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop turn (the leg's task run) until `condition` holds."""
    while True:
        if condition():
            return
        await asyncio.sleep(0)


async def sent(transport: CapturingTransport, method: str) -> Message:
    """The first request of `method` the leg sends, once it has sent it."""
    while True:
        for data in transport.sent:
            message = parse(data)
            if message.method == method:
                return message
        await asyncio.sleep(0)  # a turn of the loop: the leg's task runs


async def test_provisional_responses_are_noted_and_the_answer_ends_the_ringing() -> None:
    ua, _, leg = setup()
    leg.send_invite()
    invite = leg.transaction.request if leg.transaction else Message()
    ringing = asyncio.ensure_future(leg.ring(3600))

    ua.receive(answer(invite, "100 Trying", tag=False), PHONE)
    ua.receive(answer(invite, "180 Ringing"), PHONE)
    ua.receive(answer(invite, "200 OK"), PHONE)

    assert await ringing is True
    assert leg.ring_started is not None and leg.answered is not None
    assert leg.ring_started <= leg.answered
    assert leg.final_response == "200 OK"


async def test_a_leg_stopped_before_its_phone_rang_cancels_at_the_first_provisional() -> None:
    ua, transport, leg = setup()
    leg.send_invite()
    invite = leg.transaction.request if leg.transaction else Message()
    ringing = asyncio.ensure_future(leg.ring(3600))
    leg.stop("timeout")
    assert leg.transaction is not None
    await until(leg.transaction.responses.empty)  # the leg has taken the stop
    # Nothing came from the phone yet: no CANCEL may go (9.1).
    assert [parse(data).method for data in transport.sent] == ["INVITE"]

    ua.receive(answer(invite, "100 Trying", tag=False), PHONE)
    cancel = await sent(transport, "CANCEL")

    assert cancel.branch == invite.branch and cancel.cseq == (1, "CANCEL")
    assert [parse(data).method for data in transport.sent] == ["INVITE", "CANCEL"]
    ua.receive(answer(cancel, "200 OK", tag=False), PHONE)
    ua.receive(answer(invite, "487 Request Terminated"), PHONE)
    assert await ringing is False
    assert (leg.result, leg.final_response) == ("no_answer", "487 Request Terminated")
