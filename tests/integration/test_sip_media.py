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
import re
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.dialer.backend import CallPlan
from tests.integration.test_sip_callbacks import A, B, Lab, legs
from tests.sip.phones import Media, Phone, Stream, all_done, free_phone_port, scenario, start_phone
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
    await all_done(lab.phones)
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


# SRTP keyed in the SDP (SDES, RFC 4568): each phone's own key, as it would send it. Letters
# and digits only, so that they stand for themselves in the phones' regexps.
KEYS = {
    A: "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
    B: "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC",
}
SAVP_M_LINE = r"m=audio [0-9]+ RTP/SAVP 0"


def crypto(host: str) -> str:
    return f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEYS[host]}"


@dataclass(frozen=True)
class Traced:
    """One message in a phone's sipp trace (`-trace_msg`)."""

    received: bool
    start_line: str
    sdp: list[str]  # the body's lines


def trace(phone: Phone) -> list[Traced]:
    """Every message the phone received or sent, from sipp's own message trace: what the
    phone saw, not what the controller meant to send."""
    [log] = phone.workdir.glob("*_messages.log")
    # Bytes, not read_text: its universal newlines would hide the messages' own CRLFs.
    entries = re.split(
        r"^-{20,} .*\n", log.read_bytes().decode(errors="replace"), flags=re.MULTILINE
    )
    traced = []
    for entry in entries:
        direction, _, message = entry.partition("\n\n")
        if not message:
            continue
        head, _, body = message.partition("\r\n\r\n")
        lines = [line for line in body.split("\r\n") if line.strip()]
        traced.append(Traced("received" in direction, head.split("\r\n")[0], lines))
    return traced


def sdp_of(messages: list[Traced], received: bool, start: str) -> list[str]:
    """The SDP of the last message with a body, received or sent, starting with `start`."""
    bodies = [
        m.sdp
        for m in messages
        if m.received == received and m.start_line.startswith(start) and m.sdp
    ]
    assert bodies, f"no {start} with a body {'received' if received else 'sent'}"
    return bodies[-1]


def but_origin(sdp: list[str]) -> list[str]:
    return [line for line in sdp if not line.startswith("o=")]


async def test_srtp_offers_and_answers_are_relayed_unchanged(lab: Lab) -> None:
    # B offers RTP/SAVP with its key (B's 200); the controller relays it to A in the
    # re-INVITE; A answers with its own key, relayed to B in the ACK. Each phone checks the
    # other's key itself; the test also compares what each received with the other's SDP.
    savp = {host: Stream("RTP/SAVP", (crypto(host),)) for host in (A, B)}
    a_xml = scenario(
        "answer",
        "a",
        stream=savp[A],
        # The black hole keys A's stream with a key of ours, never A's own.
        ack_checks=(r"m=audio 9 RTP/SAVP 0", r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        sdp_checks=(SAVP_M_LINE, crypto(B)),
    )
    b_xml = scenario(
        "answer", "b", hangup="phone", stream=savp[B], sdp_checks=(SAVP_M_LINE, crypto(A))
    )
    for host, xml in ((A, a_xml), (B, b_xml)):
        phone = await start_phone(
            host, xml, transport=lab.transport, port=lab.port, extra_args=("-trace_msg",)
        )
        lab.phones.append(phone)
    report = await lab.call()
    assert report.outcome == "connected", report
    a_saw, b_saw = trace(lab.phones[0]), trace(lab.phones[1])
    # A's re-INVITE carries B's offer line for line (our origin line aside), B's ACK A's
    # answer: the profile and the keys as each phone sent them.
    b_offer, a_answer = sdp_of(b_saw, False, "SIP/2.0 200"), sdp_of(a_saw, False, "SIP/2.0 200")
    assert crypto(B) in b_offer and crypto(A) in a_answer  # the phones sent what we meant
    [reinvite] = [m for m in a_saw if m.received and m.start_line.startswith("INVITE") and m.sdp]
    assert but_origin(reinvite.sdp) == but_origin(b_offer)
    assert but_origin(sdp_of(b_saw, True, "ACK")) == but_origin(a_answer)
    # A's own key never comes back to it in the black hole: the key there is ours.
    black_hole = "".join(sdp_of(a_saw[: a_saw.index(reinvite)], True, "ACK"))
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in black_hole
    assert KEYS[A] not in black_hole and KEYS[B] not in black_hole
