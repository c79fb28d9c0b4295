"""The rules of the `Idempotency-Key` header on POSTs (no grpc, no SQL).

A client that retries a POST (its response was lost) with the same key gets the first
response again instead of a second queue or a second batch of tasks.
"""

from __future__ import annotations

import hashlib

from services.common.errors import FieldViolation, InvalidInput, Unprocessable
from services.common.retention import IDEMPOTENCY_KEY_LIFETIME

# gRPC metadata key: Envoy passes the HTTP header `Idempotency-Key` on under this name.
METADATA_KEY = "idempotency-key"
# Response header (gRPC initial metadata, which Envoy turns into an HTTP header) of a replay.
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_LENGTH = 255
KEY_LIFETIME = IDEMPOTENCY_KEY_LIFETIME


class IdempotencyKeyReused(Unprocessable):
    """The key was used, within its lifetime, for a different request (HTTP 422)."""

    reason = "IDEMPOTENCY_KEY_REUSED"


def checked_key(key: str) -> str:
    """The key as sent, if it is 1..255 printable ASCII characters; else a 400."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidInput(
            [
                FieldViolation(
                    "Idempotency-Key",
                    f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                )
            ]
        )
    return key


def request_hash(rpc: str, request: bytes) -> bytes:
    """What makes two requests "the same": the RPC and its serialized request."""
    return hashlib.sha256(rpc.encode() + b"\0" + request).digest()


def reused(key: str) -> IdempotencyKeyReused:
    """The error for a key sent again with a different request."""
    return IdempotencyKeyReused(
        f"Idempotency-Key {key!r} was already used for a different request within the "
        f"last {KEY_LIFETIME.total_seconds() / 3600:g} hours; use a new key for a new request"
    )
