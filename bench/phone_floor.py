"""The witness's own floor for `make bench-phone`: what the A phone reports for INVITEs
from a sender that takes no time.

The same sipp phone as bench/phone_lateness.py's A phone (scenario, options, -trace_msg),
and the same load on it: RATE calls due at each whole second. The sender is a plain UDP
socket that builds each second's INVITEs ahead and sends them back to back at the second
(about 1.5 ms for 200), then ACKs each answer and hangs up, as the dialer would. sipp stamps
a message as it processes it, one process working through the burst: whatever the phone
reports here is the phone's own queueing, and lateness measured with this phone cannot go
below it, whatever the dialer does.

A minimal user agent, written here because the point is a sender with no work of its own:
a SIP library (or a second sipp, whose rate spreads calls over the second instead of
sending them at once) would put its own time back between the second and the send.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from bench.chaos_sip import read_trace
from tests.sip.phones import PATIENT_ARGS, free_phone_port, patient_scenario, start_phone

HOST = "127.0.0.1"
_HEADER = re.compile(rb"^(To|From|Call-ID|CSeq):[ \t]*(.*?)\r$", re.M | re.I)
_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _request(method: str, target: str, port: int, headers: dict[str, str], body: str = "") -> bytes:
    lines = [
        f"{method} sip:{target} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Contact: <sip:floor@{HOST}:{port}>",
        *(["Content-Type: application/sdp"] if body else []),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class _Caller(asyncio.DatagramProtocol):
    """Answers the phones' final responses: ACK, then BYE, for each answered INVITE."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.ended = 0
        self.expected = 0
        self.all_ended = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, phone: tuple[str, int]) -> None:
        first = data[: data.find(b"\r\n")]
        headers = {m[1].decode().lower(): m[2].decode() for m in _HEADER.finditer(data)}
        if not first.startswith(b"SIP/2.0 200") or self.transport is None:
            return
        common = {k: headers[k] for k in ("from", "to", "call-id")}
        target = f"1001@{phone[0]}:{phone[1]}"
        if headers["cseq"].endswith("INVITE"):
            ack = {**common, "CSeq": f"{headers['cseq'].split()[0]} ACK"}
            self.transport.sendto(_request("ACK", target, self.port, ack), phone)
            bye = {**common, "CSeq": "2 BYE"}
            self.transport.sendto(_request("BYE", target, self.port, bye), phone)
        elif headers["cseq"].endswith("BYE"):
            self.ended += 1
            if self.ended >= self.expected:
                self.all_ended.set()


def _invites(phones: list[tuple[str, int]], port: int, count: int) -> list[bytes]:
    """`count` INVITEs, for the phones in turn."""
    return [
        _request(
            "INVITE",
            target := f"1001@{phone[0]}:{phone[1]}",
            port,
            {
                "From": f"<sip:floor@{HOST}>;tag={uuid.uuid4().hex[:10]}",
                "To": f"<sip:{target}>",
                "Call-ID": f"{uuid.uuid4()}@{HOST}",
                "CSeq": "1 INVITE",
            },
            _SDP,
        )
        for phone in (phones[i % len(phones)] for i in range(count))
    ]


async def _run(
    hosts: list[str], rate: int, seconds: int, folder: Path, scenario: dict[str, int]
) -> None:
    port = free_phone_port(*hosts)
    phones = [
        await start_phone(
            host,
            patient_scenario("a", **scenario),
            calls=None,
            port=port,
            timeout_seconds=None,
            workdir=folder / host,
            extra_args=(*PATIENT_ARGS, "-trace_msg"),
        )
        for host in hosts
    ]
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((HOST, 0))
    transport, caller = await loop.create_datagram_endpoint(
        lambda: _Caller(sock.getsockname()[1]), sock=sock
    )
    caller.expected = rate * seconds
    try:
        second = int(time.time()) + 2
        for _ in range(seconds):
            burst = _invites([(host, port) for host in hosts], sock.getsockname()[1], rate)
            await asyncio.sleep(max(0.0, second - 0.002 - time.time()))
            while time.time() < second:  # the last 2 ms: no sleep's lateness in the send
                pass
            for index, invite in enumerate(burst):
                sock.sendto(invite, (hosts[index % len(hosts)], port))
            second += 1
        # Every call over before the phone stops (a BYE lost on a loaded machine: 30 s).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caller.all_ended.wait(), 30)
    finally:
        transport.close()
        for phone in phones:
            if phone.process.poll() is None:
                phone.process.terminate()  # sipp flushes its trace and exits
                phone.process.wait(timeout=30)


def witness_floor(
    hosts: list[str], rate: int, seconds: int, folder: Path, scenario: dict[str, int]
) -> list[float]:
    """Each INVITE's lateness at its phone (ms; one phone per host, the INVITEs of a second
    dealt in turn): its stamp in the phone's trace minus the whole second it was sent at.
    `scenario`: the A phones' patient_scenario timings."""
    asyncio.run(_run(hosts, rate, seconds, folder, scenario))
    late = []
    for path in sorted(folder.rglob("*_messages.log")):
        for event in read_trace(path, "a"):
            if event.direction == "R" and event.method == "INVITE" and not event.to_tag:
                at = event.at.astimezone(UTC)  # sipp writes this machine's local time
                whole = datetime.fromtimestamp(int(at.timestamp()), UTC)
                late.append((at - whole).total_seconds() * 1000)
    return late
