"""A dialog that ended is kept for 64*T1 to answer retransmissions, and keeps nothing else
alive: not its leg, and through the leg not the whole callback (at 200 callbacks a second
that was 6,400 callbacks' objects, and the dialer's full garbage collections grew to
hundreds of ms). It still answers by itself what the leg would have answered."""

from __future__ import annotations

import gc
import weakref

from services.dialer.sip.leg import Caller, OutboundLeg
from services.dialer.sip.message import Address, parse
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

PHONE = Address("127.0.0.2", 5060)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"


def ok_to_invite(leg: OutboundLeg) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinvite\r\n"
        f"From: {leg.local_party};tag={leg.local_tag}\r\n"
        f"To: <{leg.request_uri}>;tag=phone\r\n"
        f"Call-ID: {leg.call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:phone@127.0.0.2:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def request_from_phone(leg: OutboundLeg, method: str, cseq: int, branch: str) -> bytes:
    return (
        f"{method} sip:callback@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK{branch}\r\n"
        f"From: <{leg.request_uri}>;tag=phone\r\n"
        f"To: {leg.local_party};tag={leg.local_tag}\r\n"
        f"Call-ID: {leg.call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_an_ended_dialog_keeps_answering_without_its_leg() -> None:
    transport = CapturingTransport()
    ua = UserAgent(transport, (Route("*", Address("127.0.0.2", 5060), "phones.test"),))
    leg = OutboundLeg(ua, "a", "+15550001111", Caller(), None, "call-1@127.0.0.1")
    leg._make_dialog(parse(ok_to_invite(leg)))
    leg.sdp_sent = SDP  # as after our ACK with an answer
    bye = request_from_phone(leg, "BYE", 2, "bye")
    reinvite = request_from_phone(leg, "INVITE", 3, "reinvite")
    ua.receive(parse(bye), PHONE)  # the phone hangs up
    assert leg.remote_hangup.is_set()
    assert parse(transport.sent[-1]).status == 200

    gone = weakref.ref(leg)
    del leg
    gc.collect()
    assert gone() is None, "the ended dialog keeps its leg alive"
    assert len(ua.dialogs) == 1  # kept for retransmissions
    ua.receive(parse(reinvite), PHONE)  # the dialog answers by itself, as the leg did
    answer = parse(transport.sent[-1])
    assert (answer.status, answer.body) == (200, SDP)
