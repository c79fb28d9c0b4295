"""Audio really flows between the two phones of a callback, through the SDP our controller
brokered (RFC 3725 flow IV: A's re-INVITE carries B's offer, B's ACK carries A's answer).

Each sipp phone offers a media port that this test owns on the phone's own address, and once
connected streams RTP (sipp's rtp_stream, a raw PCMU file with the phone's marker) to the
address of the SDP the controller gave it. The test then hears, on A's advertised port, B's
marker sent from B's address, and on B's port A's marker from A's address. The evidence comes
from outside our processes: sipp reads the controller's SDP and sends, the kernel delivers. A
controller that swaps or drops an SDP makes a phone send to its own port, or nowhere.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.dialer.backend import CallPlan
from tests.integration.test_sip_callbacks import A, B, Lab, legs
from tests.sip.phones import Media, free_phone_port, scenario
from tests.support.ports import free_port_block

MARKERS = {A: b"audio-from-A;", B: b"audio-from-B;"}
# A bound on the wait for the first packets: reached only when audio does not flow.
HEAR_TIMEOUT = 20.0


@dataclass
class Ear(asyncio.DatagramProtocol):
    """A media port the test owns: records each RTP packet's sender, SSRC and payload."""

    heard: list[tuple[str, int, bytes]] = field(default_factory=list)
    marker_heard: asyncio.Event = field(default_factory=asyncio.Event)
    expected: tuple[str, bytes] = ("", b"")

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:  # not RTP version 2
            return
        ssrc = int.from_bytes(data[8:12], "big")
        payload = data[12:]
        self.heard.append((str(addr[0]), ssrc, payload))
        host, marker = self.expected
        if addr[0] == host and marker in payload and data[1] & 0x7F == 0:  # PCMU
            self.marker_heard.set()


@pytest.fixture(params=["udp", "tcp"])
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    lab = Lab(request.param, free_phone_port(A, B))
    yield lab
    for phone in lab.phones:
        phone.stop()
    for backend in lab.backends:
        backend.close()


@pytest.fixture
async def sockets() -> AsyncIterator[list[asyncio.DatagramTransport]]:
    opened: list[asyncio.DatagramTransport] = []
    yield opened
    for transport in opened:
        transport.close()


async def open_ear(
    host: str, expected: tuple[str, bytes], opened: list[asyncio.DatagramTransport]
) -> tuple[Ear, int]:
    loop = asyncio.get_running_loop()
    while True:
        port = free_port_block(1)
        try:
            transport, ear = await loop.create_datagram_endpoint(
                lambda: Ear(expected=expected), local_addr=(host, port), family=socket.AF_INET
            )
        except OSError:  # taken on this address meanwhile: another port
            continue
        opened.append(transport)
        return ear, port


async def test_audio_flows_both_ways_through_the_brokered_sdp(
    lab: Lab, sockets: list[asyncio.DatagramTransport]
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="media-"))
    ears: dict[str, Ear] = {}
    media: dict[str, Media] = {}
    for host, other in ((A, B), (B, A)):
        # Each phone's port hears the *other* phone's marker, sent from the other's address.
        ear, port = await open_ear(host, (other, MARKERS[other]), sockets)
        audio = workdir / f"{host}.ulaw"
        audio.write_bytes((MARKERS[host] * 200)[:1600])  # 10 packets of 20 ms PCMU
        ears[host], media[host] = ear, Media(port, audio)
    await lab.phone(A, scenario("answer", "a", media=media[A]))
    await lab.phone(B, scenario("answer", "b", media=media[B]))
    # The controller hangs up (max_call) only once the test has heard both sides, or given up.
    backend = await lab.backend(max_call=0.1)
    waited: list[str] = []

    async def connected() -> None:
        try:
            async with asyncio.timeout(HEAR_TIMEOUT):
                await asyncio.gather(*(ear.marker_heard.wait() for ear in ears.values()))
        except TimeoutError:
            waited.append("timed out")

    plan = CallPlan(call_uuid="c1", a_numbers=("1001",), b_number="2001")
    report = await backend.place_call(plan, connected)
    for phone in lab.phones:
        status = await phone.finished()
        assert status == 0, f"phone {phone.host} failed ({status}):\n{phone.output()}"
    assert report.outcome == "connected", report
    assert {leg.teardown_confirmed for leg in legs(report).values()} == {True}

    def summary(ear: Ear) -> set[tuple[str, int, bytes]]:
        return {(host, ssrc, payload[:13]) for host, ssrc, payload in ear.heard}

    assert not waited, f"A's port heard {summary(ears[A])}; B's port heard {summary(ears[B])}"
    for host, other in ((A, B), (B, A)):
        senders = {sender for sender, _, _ in ears[host].heard}
        # Only the other phone sends to a phone's port: never the phone itself (a swapped SDP).
        assert senders == {other}, (host, senders)
        ssrcs = {ssrc for _, ssrc, _ in ears[host].heard}
        # One stream, the other phone's. (sipp gives both phones the same SSRC: the sender's
        # address and marker tell the directions apart, not the SSRC.)
        assert len(ssrcs) == 1, (host, ssrcs)
        assert all(MARKERS[other] in payload for _, _, payload in ears[host].heard)
