"""Client transaction timers (RFC 3261 17.1.1.2): over UDP the INVITE is retransmitted
(Timer A) until a response; Timer B (64*T1) runs only in the Calling state, so a provisional
response stops it on every transport, TCP included. Ordering, not wall-clock thresholds: a
later transaction's timeout is the signal that an earlier one's would have fired."""

from __future__ import annotations

from services.dialer.sip.message import Address, Message
from services.dialer.sip.transaction import ClientTransaction

T1 = 0.001  # 64*T1 = 64 ms: the tests run through Timer B quickly
PHONE = Address("127.0.0.2", 5060)


def invite(branch: str) -> Message:
    request = Message(method="INVITE", uri="sip:1@phone")
    request.headers = [
        ("Via", f"SIP/2.0/TCP 127.0.0.1:5060;branch={branch}"),
        ("Call-ID", f"call-{branch}"),
        ("CSeq", "1 INVITE"),
    ]
    return request


def ringing(request: Message) -> Message:
    response = Message(status=180, reason="Ringing")
    response.headers = [(name, request.get(name)) for name in ("Via", "Call-ID", "CSeq")]
    return response


def transaction(branch: str, sent: list[bytes], *, reliable: bool) -> ClientTransaction:
    return ClientTransaction(
        invite(branch), PHONE, lambda data, _: sent.append(data), reliable, t1=T1
    )


async def test_timer_b_stops_at_a_provisional_response_over_tcp() -> None:
    sent: list[bytes] = []
    ringing_one = transaction("z9hG4bK1", sent, reliable=True)
    ringing_one.start()
    ringing_one.receive(ringing(ringing_one.request))
    silent = transaction("z9hG4bK2", sent, reliable=True)
    silent.start()  # after the first: its Timer B fires after the first one's would have

    timed_out = await silent.responses.get()

    assert timed_out.status == 408
    assert ringing_one.final is None  # still Proceeding: the ring timeout decides
    assert (await ringing_one.responses.get()).status == 180
    assert ringing_one.responses.empty()
    assert len(sent) == 2  # one INVITE each, never retransmitted over TCP


async def test_over_udp_the_invite_is_retransmitted_until_timer_b() -> None:
    sent: list[bytes] = []
    silent = transaction("z9hG4bK3", sent, reliable=False)
    silent.start()

    assert (await silent.responses.get()).status == 408
    assert len(sent) >= 2 and len(set(sent)) == 1  # the same INVITE again (Timer A)
    assert silent.retransmissions == len(sent) - 1


async def test_over_udp_a_provisional_response_stops_retransmissions_and_timer_b() -> None:
    sent: list[bytes] = []
    answered = transaction("z9hG4bK4", sent, reliable=False)
    answered.start()
    answered.receive(ringing(answered.request))
    copies = len(sent)
    silent = transaction("z9hG4bK5", [], reliable=False)
    silent.start()

    assert (await silent.responses.get()).status == 408
    assert answered.final is None
    assert len(sent) == copies
