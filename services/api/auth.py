"""Bearer tokens: RS256 JWTs whose `sub` is the client_id.

Envoy's jwt_authn validates them at the edge; services validate them again so that
a direct gRPC caller (inside the cluster) cannot skip authentication either. Only the
services check a token's lifetime (`exp - iat`, at most a setting) and its revocation (a
client's tokens issued before a time the operator sets are refused): both need words Envoy
cannot give, and revocation needs the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

ISSUER = "callback-scheduler"
AUDIENCE = "callback-scheduler-api"
ALGORITHM = "RS256"
# The longest a token may be valid for (`exp - iat`), unless a service's settings say less.
DEFAULT_MAX_LIFETIME_SECONDS = 24 * 3600
LEEWAY_SECONDS = 60  # clock skew between the issuer and us (Envoy's default too)


@dataclass(frozen=True)
class Principal:
    client_id: str
    # The token's `iat`, seconds since the epoch: revocation refuses tokens issued before a time.
    issued_at: int


class TokenError(Exception):
    """The token is missing, malformed, expired or not ours."""


class TokenVerifier:
    """Verifies tokens against the public keys of a JWKS document."""

    def __init__(
        self, jwks: dict[str, Any], *, max_lifetime_seconds: int = DEFAULT_MAX_LIFETIME_SECONDS
    ) -> None:
        self._keys = {
            key["kid"]: jwt.PyJWK.from_dict(key, algorithm=ALGORITHM).key for key in jwks["keys"]
        }
        self._max_lifetime = max_lifetime_seconds

    @classmethod
    def from_file(
        cls, path: Path, *, max_lifetime_seconds: int = DEFAULT_MAX_LIFETIME_SECONDS
    ) -> TokenVerifier:
        return cls(json.loads(path.read_text()), max_lifetime_seconds=max_lifetime_seconds)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise TokenError("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise TokenError("the Authorization header must be 'Bearer <token>'")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise TokenError("the token was not signed by a known key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as err:
            raise TokenError(f"invalid token: {err}") from err
        client_id = claims["sub"]
        if not isinstance(client_id, str) or not client_id:
            raise TokenError("the token names no client")
        # PyJWT has checked that both are numbers, exp not past and iat not ahead.
        issued_at, expires_at = int(claims["iat"]), int(claims["exp"])
        lifetime = expires_at - issued_at
        if lifetime > self._max_lifetime:
            raise TokenError(
                f"token lifetime too long: it is valid for {lifetime} s (exp - iat), at most "
                f"{self._max_lifetime} s is accepted; ask for a token that expires sooner"
            )
        return Principal(client_id=client_id, issued_at=issued_at)


def check_not_revoked(principal: Principal, tokens_not_before: datetime | None) -> None:
    """Refuse a token issued before the time its client's tokens were revoked (None: never)."""
    if tokens_not_before is not None and principal.issued_at < tokens_not_before.timestamp():
        raise TokenError(
            f"token revoked: the tokens of client {principal.client_id!r} issued before "
            f"{tokens_not_before.isoformat()} are refused; ask for a new token"
        )
