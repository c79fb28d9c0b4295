"""The SDP the controller writes itself (RFC 4566 text, RFC 3264 offer/answer rules).

Third-party call control passes each phone's SDP to the other, but towards each phone the
controller is one endpoint whose session must stay consistent: its origin line keeps one
session id and a version that grows with every change (RFC 3264 8), and a new offer keeps at
least as many m-lines as the last one (RFC 3264 8.1).
"""

from __future__ import annotations

from dataclasses import dataclass


def media_lines(sdp: bytes) -> list[str]:
    return [line for line in sdp.decode(errors="replace").splitlines() if line.startswith("m=")]


def black_hole_answer(offer: bytes, origin: str) -> bytes:
    """An answer that accepts each offered stream but sends and receives nothing: connection
    address 0.0.0.0 and a=inactive (RFC 3725 4.4, flow IV's first ACK; RFC 3264 5.1)."""
    lines = [
        "v=0",
        origin,
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
    ]
    for line in media_lines(offer):
        media, port, proto, *formats = line[2:].split()
        if port == "0":
            lines.append(line)  # a stream the offerer refused stays refused
            continue
        lines.append(f"m={media} 9 {proto} {formats[0] if formats else '0'}")
        lines.append("a=inactive")
    return ("\r\n".join(lines) + "\r\n").encode()


def with_origin(sdp: bytes, origin: str, previous_media: int = 0) -> bytes:
    """The SDP with our origin line, padded with refused streams up to `previous_media`
    m-lines (RFC 3264 8.1: a new offer never has fewer m-lines than the last)."""
    lines = [
        origin if line.startswith("o=") else line
        for line in sdp.decode(errors="replace").splitlines()
        if line
    ]
    for _ in range(previous_media - sum(line.startswith("m=") for line in lines)):
        lines.append("m=audio 0 RTP/AVP 0")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Origin:
    """Our side of one SDP session (one per phone): o=<user> <id> <version> IN IP4 <host>."""

    session_id: int
    host: str
    version: int = 0
    media_count: int = 0

    def next(self) -> str:
        self.version += 1
        return f"o=callback {self.session_id} {self.version} IN IP4 {self.host}"
