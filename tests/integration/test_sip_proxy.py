"""The sip backend behind a real SIP proxy (Kamailio from Debian) with digest authentication
and Record-Route, in front of sipp phones, over UDP and TCP.

The proxy challenges every new INVITE (407) for the dialer's account, records the route, so
every in-dialog request (ACK, re-INVITE, BYE) must follow the route set through it, and relays
CANCELs hop by hop. A test passes only if the controller's report is right, every phone's
sipp exits 0 (the phones check that in-dialog requests came through the proxy), and Kamailio
saw what it should.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.dialer.backend import CallPlan, CallReport
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.leg import Account
from services.dialer.sip.message import Address
from services.dialer.sip.transaction import ClientTransaction
from services.dialer.sip.ua import Route
from tests.integration.test_sip_callbacks import (
    A2,
    LONG_RING_TIMEOUT,
    SHORT_RING_TIMEOUT,
    A,
    B,
    Transport,
    legs,
)
from tests.sip.phones import Phone, all_done, free_phone_port, scenario, start_phone
from tests.sip.proxy import PROXY_HOST, REALM, Proxy, start_proxy

ACCOUNT = ("dialer", "s3cret-proxy")
NUMBERS = {"1001": A, "1002": A2, "2001": B}


class ProxyLab:
    """A proxy, its phones and the controllers of one test, on one transport."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.phone_port = free_phone_port(A, A2, B)
        self.proxy_port = free_phone_port(PROXY_HOST)
        self.proxy: Proxy | None = None
        self.phones: list[Phone] = []
        self.backends: list[SipBackend] = []

    async def start_proxy(self) -> Proxy:
        phones = {number: (host, self.phone_port) for number, host in NUMBERS.items()}
        self.proxy = await start_proxy(
            self.proxy_port, phones, transport=self.transport, account=ACCOUNT
        )
        return self.proxy

    async def phone(self, host: str, xml: str) -> Phone:
        phone = await start_phone(host, xml, transport=self.transport, port=self.phone_port)
        self.phones.append(phone)
        return phone

    async def backend(
        self,
        *,
        password: str = ACCOUNT[1],
        ring_timeout: float = LONG_RING_TIMEOUT,
        t1: float | None = None,
    ) -> SipBackend:
        proxy = Address(PROXY_HOST, self.proxy_port)
        backend = await SipBackend.open(
            transport=self.transport,
            listen="127.0.0.1:0",
            advertise="",
            routes=tuple(Route(number, proxy, REALM) for number in NUMBERS),
            accounts={0: Account(ACCOUNT[0], password)},
            assert_identity=False,
            socket_buffer_bytes=1 << 20,
            ring_timeout_seconds=ring_timeout,
            max_call_seconds=30.0,
        )
        if t1 is not None:  # RFC 3261 T1 (500 ms), scaling every timer: Timer B is 64*T1
            backend.ua.t1 = t1
        self.backends.append(backend)
        return backend

    async def call(
        self, a_numbers: tuple[str, ...] = ("1001",), expect: str = "", **kw: Any
    ) -> CallReport:
        """Place the callback, then wait for every phone's own verdict. `expect`: the outcome,
        checked before waiting for the phones (a phone left ringing by a fault would keep the
        test waiting for sipp's own timeout)."""
        backend = await self.backend(**kw)

        async def connected() -> None:
            pass

        plan = CallPlan(call_uuid="c1", a_numbers=a_numbers, b_number="2001")
        report = await backend.place_call(plan, connected)
        assert not expect or report.outcome == expect, report
        await all_done(self.phones)
        return report

    def insane(self) -> list[str]:
        """Messages of ours that Kamailio's sanity_check refused."""
        assert self.proxy is not None
        return [line for line in self.proxy.log().splitlines() if "INSANE" in line]


@pytest.fixture(params=["udp", "tcp"])
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[ProxyLab]:
    lab = ProxyLab(request.param)
    await lab.start_proxy()
    yield lab
    for phone in lab.phones:
        phone.stop()
    for backend in lab.backends:
        backend.close()
    if lab.proxy is not None:
        lab.proxy.stop()


async def test_both_answer_and_b_hangs_up(lab: ProxyLab) -> None:
    await lab.phone(A, scenario("answer", "a", proxy=PROXY_HOST))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=PROXY_HOST))
    report = await lab.call()
    assert report.outcome == "connected", report
    a, b = legs(report)["1001"], legs(report)["2001"]
    assert a.result == b.result == "answered"
    assert a.hangup_by == b.hangup_by == "b"
    assert a.teardown_confirmed and b.teardown_confirmed
    assert lab.insane() == []


async def test_a_hangs_up_during_the_call(lab: ProxyLab) -> None:
    await lab.phone(A, scenario("answer", "a", hangup="phone", talk_ms=300, proxy=PROXY_HOST))
    await lab.phone(B, scenario("answer", "b", proxy=PROXY_HOST))
    report = await lab.call()
    assert report.outcome == "connected", report
    assert {leg.hangup_by for leg in report.legs} == {"a"}
    assert all(leg.teardown_confirmed for leg in report.legs)


async def test_a_busy(lab: ProxyLab) -> None:
    await lab.phone(A, scenario("busy", proxy=PROXY_HOST))
    report = await lab.call()
    assert report.outcome == "a_busy", report
    [a] = report.legs
    assert a.final_response == "486 Busy Here"
    assert lab.insane() == []


async def test_b_no_answer_is_cancelled_through_the_proxy(lab: ProxyLab) -> None:
    await lab.phone(A, scenario("answer", "a_dropped", proxy=PROXY_HOST))
    await lab.phone(B, scenario("no_answer", proxy=PROXY_HOST))
    report = await lab.call(ring_timeout=SHORT_RING_TIMEOUT)
    assert report.outcome == "b_no_answer", report
    a, b = legs(report)["1001"], legs(report)["2001"]
    assert b.final_response == "487 Request Terminated" and b.answered is None
    assert a.result == "answered" and a.hangup_by == "system" and a.teardown_confirmed
    assert lab.proxy is not None and len(lab.proxy.requests("CANCEL")) == 1
    assert lab.insane() == []


async def test_wrong_password_is_a_clear_error_without_retries(lab: ProxyLab) -> None:
    report = await lab.call(password="wrong")  # no phone: the proxy never lets the call on
    assert report.outcome == "error", report
    [a] = report.legs
    assert a.final_response == "407 Proxy Authentication Required", report
    # The INVITE and one answer to the challenge, then nothing more (no retry storm).
    assert lab.proxy is not None
    invites = lab.proxy.requests("INVITE")
    assert len(invites) == 2, invites
    assert "407" in report.comment or "Proxy Authentication" in report.comment, report


# Issue 22 fault 1 (fixed): over TCP a provisional response did not stop Timer B, so a
# ringing leg ended as 408 at 64*T1 and was never CANCELled.
@pytest.mark.parametrize("lab", ["tcp"], indirect=True)
async def test_tcp_leg_ringing_past_timer_b_is_cancelled_at_the_ring_timeout(
    lab: ProxyLab,
) -> None:
    # T1 scaled down (50 ms: Timer B at 3.2 s) so the ring timeout can exceed 64*T1 cheaply.
    t1 = 0.05
    await lab.phone(A, scenario("no_answer", proxy=PROXY_HOST))
    report = await lab.call(t1=t1, ring_timeout=64 * t1 * 1.5, expect="a_no_answer")
    [a] = report.legs
    assert a.final_response == "487 Request Terminated", report
    assert lab.proxy is not None and len(lab.proxy.requests("CANCEL")) == 1


# Issue 22 fault 2 (fixed): the winning parallel A leg was ACKed (and B dialled) only once
# every losing leg had finished.
async def test_a_late_487_from_a_losing_a_leg_does_not_hold_up_the_winner(lab: ProxyLab) -> None:
    # The loser answers our CANCEL at once but sends its 487 only 5 s later (RFC 3261 9.2
    # allows it); the winner must be ACKed and B dialled without waiting for it.
    await lab.phone(A, scenario("no_answer", proxy=PROXY_HOST, late_487_ms=5000))
    await lab.phone(A2, scenario("answer", "a", proxy=PROXY_HOST))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=PROXY_HOST))
    report = await lab.call(("1001", "1002"), expect="connected")
    loser, winner, b = legs(report)["1001"], legs(report)["1002"], legs(report)["2001"]
    assert winner.result == "answered" and loser.result == "cancelled"
    assert loser.final_response == "487 Request Terminated"
    # By order, not by a clock: B was dialled and answered before the loser's late 487.
    assert b.answered and loser.ended and b.answered < loser.ended, report


async def test_a_losing_a_leg_that_never_answers_the_cancel_costs_nothing(lab: ProxyLab) -> None:
    # The loser takes our CANCEL and never sends anything again (the proxy answers the CANCEL
    # hop by hop, then waits on the phone far longer than we do). The callback still connects
    # A and B; the loser's INVITE is given up 64*T1 after the CANCEL (RFC 3261 9.1) and its
    # transaction destroyed. T1 scaled to 50 ms: the give-up comes 4.2 s after the CANCEL.
    t1 = 0.05
    await lab.phone(A, scenario("no_answer", proxy=PROXY_HOST, on_cancel="silence"))
    await lab.phone(A2, scenario("answer", "a", proxy=PROXY_HOST))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=PROXY_HOST))
    report = await lab.call(("1001", "1002"), expect="connected", t1=t1)
    loser, winner, b = legs(report)["1001"], legs(report)["1002"], legs(report)["2001"]
    assert winner.result == b.result == "answered", report
    assert winner.teardown_confirmed and b.teardown_confirmed, report
    assert loser.result == "cancelled" and loser.final_response == "408 No Final Response"
    # By order: B answered before the loser was given up.
    assert b.answered and loser.ended and b.answered < loser.ended, report
    # Nothing of the call is left running once it is reported: no transaction without a
    # final response (the loser's INVITE would stay in Proceeding forever), no task.
    [backend] = lab.backends
    open_transactions = [
        t.request.method
        for t in backend.ua.transactions.values()
        if isinstance(t, ClientTransaction) and t.final is None
    ]
    assert open_transactions == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert lab.proxy is not None and len(lab.proxy.requests("CANCEL")) == 1


async def test_a_losing_a_leg_whose_200_crosses_the_cancel_is_acked_and_hung_up(
    lab: ProxyLab,
) -> None:
    # The loser's 200 OK to the INVITE comes after our CANCEL (it crossed it, RFC 3261 9.1:
    # the CANCEL then has no effect): its dialog is ACKed (a black hole) and ended with our
    # BYE, both through the proxy, checked by the loser's phone itself, while A and B talk.
    await lab.phone(A, scenario("no_answer", proxy=PROXY_HOST, on_cancel="answer"))
    await lab.phone(A2, scenario("answer", "a", proxy=PROXY_HOST))
    await lab.phone(B, scenario("answer", "b", hangup="phone", proxy=PROXY_HOST))
    report = await lab.call(("1001", "1002"), expect="connected")
    loser, winner, b = legs(report)["1001"], legs(report)["1002"], legs(report)["2001"]
    assert winner.result == b.result == "answered", report
    assert loser.result == "cancelled" and loser.final_response == "200 OK", report
    assert loser.hangup_by == "system" and loser.teardown_confirmed, report
    assert lab.insane() == []
