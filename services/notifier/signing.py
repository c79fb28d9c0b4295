"""Webhook signatures: HMAC-SHA256 of "<timestamp>.<body>" with the client's secret.

A client's secrets are versioned (services/notifier/tenant_secrets.py): normally one, two
during the overlap after a rotation. Every webhook carries

- `X-Callback-Signature: v1=<hex>`: one signature, as always, with the *older* live secret
  (during an overlap the one the receiver had before the rotation; otherwise the only one).
  Receivers that compare this header with the signature they compute keep working across a
  rotation as long as they switch to the new secret when the overlap ends.
- `X-Callback-Signatures: v1=<hex>,v1=<hex>`: a signature with every live secret, newest
  first (one item outside an overlap). A receiver accepts the webhook when any item matches
  a signature it computes with a secret it holds (`verify`): it may switch secrets at any
  moment of the overlap.

A client without a secret of its own signs with HMAC(master key, client id), its version 1
(`client_secret`): what every client had before secrets were per client.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Callback-Signature"
SIGNATURES_HEADER = "X-Callback-Signatures"
TIMESTAMP_HEADER = "X-Callback-Timestamp"
SCHEME = "v1"


def client_secret(signing_key: str, client_id: str) -> str:
    """A client's version 1 secret, derived from the master key."""
    return hmac.new(signing_key.encode(), client_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def signature_headers(secrets: Sequence[str], timestamp: int, body: bytes) -> dict[str, str]:
    """Both signature headers, from the client's live secrets, newest first."""
    signatures = [sign(secret, timestamp, body) for secret in secrets]
    return {SIGNATURE_HEADER: signatures[-1], SIGNATURES_HEADER: ",".join(signatures)}


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: int = 300
) -> bool:
    """What a receiver does: one of the signatures (either header's value) matches and the
    timestamp is recent (no replay)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, int(timestamp), body)
    # Every item is compared (no early exit): the time taken says nothing about which matched.
    matches = [hmac.compare_digest(expected, item.strip()) for item in signature.split(",")]
    return any(matches)
