"""The dialer's user agent remembers its answers to the peers' requests (BYE, re-INVITE,
OPTIONS) for 64*T1, to send the same bytes again when a request is retransmitted (RFC 3261
17.2.2), and forgets each one after that: the memory is what arrived in the last 64*T1, not
a pile pruned all at once (a whole pass over it per answer, at 200 callbacks a second)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.dialer.sip import ua as ua_module
from services.dialer.sip.message import Address, parse
from services.dialer.sip.ua import Route, UserAgent
from tests.support.sip_transport import CapturingTransport

PEER = Address("127.0.0.2", 5060)
T1 = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def options(branch: str) -> bytes:
    return (
        "OPTIONS sip:dialer@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK{branch}\r\n"
        "From: <sip:phone@127.0.0.2>;tag=p1\r\n"
        "To: <sip:dialer@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.2\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ua_module, "time", SimpleNamespace(monotonic=clock))
    return clock


def agent() -> tuple[UserAgent, CapturingTransport]:
    transport = CapturingTransport()
    return UserAgent(transport, (Route("*", Address("127.0.0.9", 5060), "t"),), t1=T1), transport


def test_a_retransmitted_request_gets_the_same_answer_within_64_t1(clock: Clock) -> None:
    ua, transport = agent()
    ua.receive(parse(options("first")), PEER)
    clock.now += 64 * T1 - 0.1
    ua.receive(parse(options("second")), PEER)  # forgets only what is older than 64*T1
    ua.receive(parse(options("first")), PEER)
    assert transport.sent[2] == transport.sent[0]  # the same To tag: sent again, not anew


def test_answers_older_than_64_t1_are_forgotten_as_new_ones_come(clock: Clock) -> None:
    ua, _ = agent()
    window = 64 * T1
    step = 0.1  # 10 requests a second: 320 within the window
    for index in range(3000):
        ua.receive(parse(options(f"b{index}")), PEER)
        clock.now += step
        assert len(ua._answered) <= window / step + 1
    # The oldest kept is the first within the window.
    oldest = next(iter(ua._answered.values()))
    assert oldest[1] >= clock.now - step - window
