"""The local stack's signing key: generated on first run, kept in the state dir (never in git)."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.api.auth import ALGORITHM, AUDIENCE, DEFAULT_MAX_LIFETIME_SECONDS, ISSUER

KEY_ID = "local-1"
WEBHOOK_SIGNING_KEY = "webhook-signing.key"
PRIVATE_KEY = "jwt-private.pem"
JWKS = "jwks.json"


DB_ROLE_PASSWORDS = "db-role-passwords.json"
NATS_PASSWORDS = "nats-passwords.json"


def ensure_keys(state_dir: Path) -> Path:
    """Create the RSA key pair and its JWKS once; return the JWKS path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    private_path, jwks_path = state_dir / PRIVATE_KEY, state_dir / JWKS
    if private_path.exists() and jwks_path.exists():
        return jwks_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public_jwk.update(kid=KEY_ID, alg=ALGORITHM, use="sig")
    jwks_path.write_text(json.dumps({"keys": [public_jwk]}))
    return jwks_path


def mint_token(
    state_dir: Path, client_id: str, *, ttl_seconds: int = DEFAULT_MAX_LIFETIME_SECONDS
) -> str:
    """A bearer token for one client, signed with the local key (valid for the longest
    lifetime the api accepts by default)."""
    now = int(time.time())
    return sign_claims(
        state_dir,
        {"iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "iat": now, "exp": now + ttl_seconds},
    )


def sign_claims(state_dir: Path, claims: dict[str, object]) -> str:
    """Any claims as a token signed with the local key (tests of what the api refuses)."""
    ensure_keys(state_dir)
    key = (state_dir / PRIVATE_KEY).read_bytes()
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": KEY_ID})


def ensure_webhook_signing_key(state_dir: Path) -> str:
    """The notifier's master signing key, generated once (never in git)."""
    path = state_dir / WEBHOOK_SIGNING_KEY
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()


def ensure_db_role_passwords(state_dir: Path, services: tuple[str, ...]) -> dict[str, str]:
    """A random password per service's PostgreSQL role, generated once (never in git)."""
    return _ensure_passwords(state_dir / DB_ROLE_PASSWORDS, services, secrets.token_hex)


def ensure_nats_passwords(state_dir: Path, users: tuple[str, ...]) -> dict[str, str]:
    """A random password per NATS user, generated once (never in git). Delete the file to
    rotate them (the next start uses new ones). They start with a letter: nats-server reads
    a password from its environment, and one that looks like a number would become one."""
    return _ensure_passwords(
        state_dir / NATS_PASSWORDS, users, lambda size: "n" + secrets.token_hex(size)
    )


def _ensure_passwords(
    path: Path, names: tuple[str, ...], generate: Callable[[int], str]
) -> dict[str, str]:
    state_dir = path.parent
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if not all(name in known for name in names):
        known = {name: known.get(name) or generate(24) for name in names}
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(known, out)
    return known
