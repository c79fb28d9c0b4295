"""The SDP the controller writes itself (RFC 4566 text, RFC 3264 offer/answer rules).

Third-party call control passes each phone's SDP to the other, but towards each phone the
controller is one endpoint whose session must stay consistent: its origin line keeps one
session id and a version that grows with every change (RFC 3264 8), and a new offer keeps at
least as many m-lines as the last one (RFC 3264 8.1).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

# SDES crypto suites (RFC 4568 6.2, RFC 6188, RFC 7714) and their master key + salt length
# in bytes: what an `inline:` key of each must hold.
_KEY_SALT_BYTES = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "F8_128_HMAC_SHA1_80": 30,
    "AES_192_CM_HMAC_SHA1_80": 38,
    "AES_192_CM_HMAC_SHA1_32": 38,
    "AES_256_CM_HMAC_SHA1_80": 46,
    "AES_256_CM_HMAC_SHA1_32": 46,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}


def media_lines(sdp: bytes) -> list[str]:
    return [line for line in sdp.decode(errors="replace").splitlines() if line.startswith("m=")]


def media_sections(sdp: bytes) -> list[list[str]]:
    """Each m-line with the lines of its media section (those up to the next m-line)."""
    sections: list[list[str]] = []
    for line in sdp.decode(errors="replace").splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections and line:
            sections[-1].append(line)
    return sections


def _crypto_answer(section: list[str]) -> str | None:
    """Our `a=crypto` line answering an SDES offer (RFC 4568 5.1.2): the tag and suite of the
    first offered line whose suite we know, with a key of our own. None: no suite we know
    (the stream must then be refused). The key is random and never used: the black hole
    sends nothing, but a secure stream accepted without a crypto line is not a valid answer."""
    for line in section:
        if not line.startswith("a=crypto:"):
            continue
        tag, _, rest = line.removeprefix("a=crypto:").partition(" ")
        suite = rest.split(" ", 1)[0]
        size = _KEY_SALT_BYTES.get(suite)
        if size is not None and tag.isdigit():
            key = base64.b64encode(secrets.token_bytes(size)).decode()
            return f"a=crypto:{tag} {suite} inline:{key}"
    return None


def black_hole_answer(offer: bytes, origin: str) -> bytes:
    """An answer that accepts each offered stream but sends and receives nothing: connection
    address 0.0.0.0 and a=inactive (RFC 3725 4.4, flow IV's first ACK; RFC 3264 5.1). An
    SDES-keyed stream (RTP/SAVP with `a=crypto`, RFC 4568) is accepted with a crypto line of
    ours, or refused when no offered suite is one we know."""
    lines = [
        "v=0",
        origin,
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
    ]
    for section in media_sections(offer):
        line = section[0]
        media, port, proto, *formats = line[2:].split()
        first = formats[0] if formats else "0"
        if port == "0":
            lines.append(line)  # a stream the offerer refused stays refused
            continue
        offered_keys = any(attribute.startswith("a=crypto:") for attribute in section)
        crypto = _crypto_answer(section) if offered_keys else None
        if offered_keys and crypto is None:
            lines.append(f"m={media} 0 {proto} {first}")
            continue
        lines.append(f"m={media} 9 {proto} {first}")
        lines.append("a=inactive")
        if crypto is not None:
            lines.append(crypto)
    return ("\r\n".join(lines) + "\r\n").encode()


def with_origin(sdp: bytes, origin: str, previous_media: int = 0) -> bytes:
    """The SDP with our origin line, padded with refused streams up to `previous_media`
    m-lines (RFC 3264 8.1: a new offer never has fewer m-lines than the last). Every other
    line is the phone's as it is: profiles (RTP/SAVP) and `a=crypto` keys included, so that
    SRTP keyed by SDES is negotiated end to end between the phones (RFC 4568)."""
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
