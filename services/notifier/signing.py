"""Webhook signatures: HMAC-SHA256 of "<timestamp>.<body>" with the client's secret.

Each client's secret is derived from the notifier's signing key (HMAC of the client id), so
there is no table of secrets to keep in sync; an operator hands a client its secret with
`make webhook-secret CLIENT=<id>`. A receiver verifies with `verify` (see the README).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Callback-Signature"
TIMESTAMP_HEADER = "X-Callback-Timestamp"
SCHEME = "v1"


def client_secret(signing_key: str, client_id: str) -> str:
    return hmac.new(signing_key.encode(), client_id.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: int = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (no replay)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
