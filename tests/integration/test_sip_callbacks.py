"""The sip backend against real SIP phones (sipp) on loopback: every outcome of a callback.

Phones: A on 127.0.0.2 (and a second A on 127.0.0.4), B on 127.0.0.3, routed by number.
A test passes only if the controller's report is right *and* every phone's sipp exits 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.dialer.backend import CallPlan, CallReport
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.leg import Account
from services.dialer.sip.message import Address
from services.dialer.sip.ua import Route
from tests.sip.phones import Phone, scenario, start_phone

A, A2, B = "127.0.0.2", "127.0.0.4", "127.0.0.3"
PHONES = {"1001": A, "1002": A2, "2001": B}


def routes(port: int) -> tuple[Route, ...]:
    return tuple(
        Route(number, Address(host, port), "callback.test") for number, host in PHONES.items()
    )


async def open_backend(
    transport: str, port: int, *, ring_timeout: float = 2.0, max_call: float = 30.0, **kw: Any
) -> SipBackend:
    return await SipBackend.open(
        transport=transport,
        listen="127.0.0.1:0",
        advertise="",
        routes=routes(port),
        accounts=kw.get("accounts", {}),
        assert_identity=kw.get("assert_identity", False),
        socket_buffer_bytes=1 << 20,
        ring_timeout_seconds=ring_timeout,
        max_call_seconds=max_call,
    )


Opener = Callable[..., Any]


@pytest.fixture(params=["udp", "tcp"])
async def sip(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, list[SipBackend]]]:
    opened: list[SipBackend] = []
    yield request.param, opened
    for backend in opened:
        backend.close()


async def place(
    backend: SipBackend, a_numbers: tuple[str, ...] = ("1001",), **plan: Any
) -> tuple[CallReport, list[str]]:
    events: list[str] = []

    async def connected() -> None:
        events.append("connected")

    call = CallPlan(call_uuid="c1", a_numbers=a_numbers, b_number="2001", **plan)
    return await backend.place_call(call, connected), events


async def phones_done(*phones: Phone) -> None:
    for phone in phones:
        status = await phone.finished()
        assert status == 0, f"phone {phone.host} failed ({status}):\n{phone.output()}"


def legs(report: CallReport) -> dict[tuple[str, str], Any]:
    return {(leg.role, leg.number): leg for leg in report.legs}


PORT = {"udp": 15060, "tcp": 15062}


async def test_both_answer_and_b_hangs_up(sip: tuple[str, list[SipBackend]]) -> None:
    transport, opened = sip
    port = PORT[transport]
    a = await start_phone(A, scenario("answer", "a"), transport=transport, port=port)  # type: ignore[arg-type]
    b = await start_phone(
        B, scenario("answer", "b", hangup="phone", talk_ms=300), transport=transport, port=port  # type: ignore[arg-type]
    )
    backend = await open_backend(transport, port)
    opened.append(backend)
    report, events = await place(backend, caller_id_name="Sales", caller_id_number="5550000")
    await phones_done(a, b)
    assert report.outcome == "connected", report
    assert events == ["connected"]
    by_leg = legs(report)
    a_leg, b_leg = by_leg[("a", "1001")], by_leg[("b", "2001")]
    assert a_leg.result == b_leg.result == "answered"
    assert a_leg.final_response == b_leg.final_response == "200 OK"
    assert a_leg.sip_call_id and b_leg.sip_call_id and a_leg.sip_call_id != b_leg.sip_call_id
    assert a_leg.hangup_by == b_leg.hangup_by == "b"
    assert a_leg.teardown_confirmed and b_leg.teardown_confirmed
    assert report.connected_at is not None
    assert a_leg.answered and b_leg.answered and a_leg.answered <= b_leg.answered
