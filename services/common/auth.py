"""Bearer tokens: RS256 JWTs whose `sub` is the client_id.

Envoy's jwt_authn validates them at the edge; services validate them again so that
a direct gRPC caller (inside the cluster) cannot skip authentication either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

ISSUER = "callback-scheduler"
AUDIENCE = "callback-scheduler-api"
ALGORITHM = "RS256"


@dataclass(frozen=True)
class Principal:
    client_id: str


class TokenError(Exception):
    """The token is missing, malformed, expired or not ours."""


class TokenVerifier:
    """Verifies tokens against the public keys of a JWKS document."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = {
            key["kid"]: jwt.PyJWK.from_dict(key, algorithm=ALGORITHM).key for key in jwks["keys"]
        }

    @classmethod
    def from_file(cls, path: Path) -> TokenVerifier:
        return cls(json.loads(path.read_text()))

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
                options={"require": ["sub", "exp", "iss", "aud"]},
                leeway=60,
            )
        except jwt.PyJWTError as err:
            raise TokenError(f"invalid token: {err}") from err
        client_id = claims["sub"]
        if not isinstance(client_id, str) or not client_id:
            raise TokenError("the token names no client")
        return Principal(client_id=client_id)
