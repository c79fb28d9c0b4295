"""After its final response a client transaction lingers 64*T1 for copies of that response
(RFC 3261 17.1.1.2 Timer D, 17.1.2.2 Timer K, RFC 6026), but only what that needs stays in
memory: the ACK of a non-2xx and where to send it. The transaction itself (its request,
responses and their queue) can be collected at once: at 200 callbacks a second some 32,000
transactions linger, and kept whole they made the dialer's full collections last hundreds
of ms."""

from __future__ import annotations

import asyncio
import gc
import weakref

from services.dialer.sip.message import Address, parse
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

PHONE = Address("127.0.0.2", 5060)


def busy_answer(invite: bytes) -> bytes:
    request = parse(invite)
    return (
        "SIP/2.0 486 Busy Here\r\n"
        f"Via: {request.get('Via')}\r\n"
        f"From: {request.get('From')}\r\n"
        f"To: {request.get('To')};tag=phone\r\n"
        f"Call-ID: {request.call_id}\r\n"
        f"CSeq: {request.get('CSeq')}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_a_finished_transaction_lingers_as_its_ack_only() -> None:
    transport = CapturingTransport(reliable=False)
    ua = UserAgent(transport, (Route("*", PHONE, "phones.test"),))
    invite = ua.new_request(
        "INVITE",
        "sip:+15550001111@phones.test",
        [
            ("From", "<sip:callback@phones.test>;tag=us"),
            ("To", "<sip:+15550001111@phones.test>"),
            ("Call-ID", "call-1@127.0.0.1"),
            ("CSeq", "1 INVITE"),
        ],
    )
    transaction = ua.send_request(invite, PHONE)
    answer = busy_answer(transport.sent[0])
    ua.receive(parse(answer), PHONE)
    assert (await transaction.responses.get()).status == 486  # the user has its answer
    ack = transport.sent[-1]
    assert ack.startswith(b"ACK ")

    gone = weakref.ref(transaction)
    del transaction
    gc.collect()
    assert gone() is None, "the lingering entry keeps the whole transaction alive"
    assert len(ua.transactions) == 1  # still absorbing copies for 64*T1
    gc.collect()  # the collector untracks a tuple of plain values when it first sees it
    (lingering,) = ua.transactions.values()
    assert not gc.is_tracked(lingering)  # plain values: nothing for the collector to walk
    ua.receive(parse(answer), PHONE)  # the 486 again: its ACK was lost
    assert transport.sent[-1] == ack


async def test_a_lingering_transaction_is_dropped_after_64_t1() -> None:
    transport = CapturingTransport(reliable=False)
    ua = UserAgent(transport, (Route("*", PHONE, "phones.test"),), t1=0.005)
    invite = ua.new_request(
        "INVITE",
        "sip:+15550001111@phones.test",
        [
            ("From", "<sip:c@phones.test>;tag=us"),
            ("To", "<sip:+15550001111@phones.test>"),
            ("Call-ID", "call-2@127.0.0.1"),
            ("CSeq", "1 INVITE"),
        ],
    )
    ua.send_request(invite, PHONE)
    ua.receive(parse(busy_answer(transport.sent[0])), PHONE)
    assert len(ua.transactions) == 1
    for _ in range(1000):  # 64*T1 = 0.32 s here; the test's timeout bounds a failure
        if not ua.transactions:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the lingering transaction was never dropped")
