"""Digest authentication for SIP requests (RFC 3261 22.4, RFC 2617, RFC 8760 for SHA-256).

Hand-written: the HTTP libraries' digest helpers (httpx.DigestAuth, requests) are bound to
their own request objects; SIP needs only the response computation over method and URI.
"""

from __future__ import annotations

import hashlib
import secrets

from services.dialer.sip.message import split_list

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` -> {"realm": "x", ...} (names lowercased)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    challenge: dict[str, str] = {}
    for item in split_list(rest):
        name, _, val = item.partition("=")
        challenge[name.strip().lower()] = val.strip().strip('"')
    return challenge


def supported(challenge: dict[str, str]) -> bool:
    algorithm = challenge.get("algorithm", "MD5").upper()
    qops = {q.strip() for q in challenge.get("qop", "auth").split(",")}
    return algorithm in _HASHES and "auth" in qops and "nonce" in challenge


def authorization(
    challenge: dict[str, str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nonce_count: int = 1,
    cnonce: str = "",
) -> str:
    """The Authorization / Proxy-Authorization header value answering a challenge."""
    algorithm = challenge.get("algorithm", "MD5").upper()
    hash_hex = _HASHES[algorithm]

    def h(text: str) -> str:
        return hash_hex(text.encode()).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    fields = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    if "qop" in challenge:
        cnonce, nc = cnonce or secrets.token_hex(8), f"{nonce_count:08x}"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:  # RFC 2069 compatibility (RFC 2617 3.2.2.1)
        response = h(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
