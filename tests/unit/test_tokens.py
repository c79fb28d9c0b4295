"""Token rules without a stack: lifetime, revocation, the revocation cache, `make token`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.local.keys import JWKS, mint_token, sign_claims
from services.api.auth import (
    AUDIENCE,
    DEFAULT_MAX_LIFETIME_SECONDS,
    ISSUER,
    Principal,
    TokenError,
    TokenVerifier,
    check_not_revoked,
)
from services.api.revocation import RevocationTimes

ROOT = Path(__file__).resolve().parents[2]


def verifier(state: Path, **options: int) -> TokenVerifier:
    return TokenVerifier.from_file(state / JWKS, **options)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_token_of_the_longest_lifetime_passes_and_one_second_more_does_not(
    tmp_path: Path,
) -> None:
    token = mint_token(tmp_path, "c1", ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS)
    principal = verifier(tmp_path).verify(bearer(token))
    assert principal.client_id == "c1"
    assert abs(principal.issued_at - time.time()) < 120
    longer = mint_token(tmp_path, "c1", ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS + 1)
    with pytest.raises(TokenError, match="token lifetime too long"):
        verifier(tmp_path).verify(bearer(longer))


def test_the_maximum_lifetime_is_a_setting(tmp_path: Path) -> None:
    token = mint_token(tmp_path, "c1", ttl_seconds=3600)
    with pytest.raises(TokenError, match="at most 600 s"):
        verifier(tmp_path, max_lifetime_seconds=600).verify(bearer(token))


@pytest.mark.parametrize("missing", ["iat", "exp"])
def test_a_token_without_iat_or_exp_is_refused(tmp_path: Path, missing: str) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "c1", "iat": now, "exp": now + 60}
    del claims[missing]
    token = sign_claims(tmp_path, dict(claims))
    with pytest.raises(TokenError, match=missing):
        verifier(tmp_path).verify(bearer(token))


def test_a_token_issued_before_the_revocation_is_refused() -> None:
    revoked_at = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    check_not_revoked(Principal("c1", int(revoked_at.timestamp())), revoked_at)
    check_not_revoked(Principal("c1", 0), None)
    with pytest.raises(TokenError, match="token revoked"):
        check_not_revoked(Principal("c1", int(revoked_at.timestamp()) - 1), revoked_at)


def test_revocation_times_are_read_once_per_ttl() -> None:
    reads: list[str] = []
    now = [100.0]

    async def load(client_id: str) -> datetime | None:
        reads.append(client_id)
        return None

    async def scenario() -> None:
        cached = RevocationTimes(load, ttl=5.0, clock=lambda: now[0])
        await cached.tokens_not_before("a")
        await cached.tokens_not_before("a")
        await cached.tokens_not_before("b")
        now[0] += 5.0
        await cached.tokens_not_before("a")
        uncached = RevocationTimes(load, ttl=0.0, clock=lambda: now[0])
        await uncached.tokens_not_before("c")
        await uncached.tokens_not_before("c")

    asyncio.run(scenario())
    assert reads == ["a", "b", "a", "c", "c"]


def test_make_token_issues_a_token_the_api_accepts(tmp_path: Path) -> None:
    """`make token` runs deploy/local/token.py: its default lifetime is the api's maximum."""
    printed = subprocess.run(
        [sys.executable, "-m", "deploy.local.token", "c9"],
        cwd=ROOT,
        env={**os.environ, "STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert verifier(tmp_path).verify(bearer(printed)).client_id == "c9"
    claims = json.loads(base64.urlsafe_b64decode(printed.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == DEFAULT_MAX_LIFETIME_SECONDS
