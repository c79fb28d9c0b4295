"""Tenants' webhook secrets: made random, kept sealed at rest.

A secret is 32 random bytes (`secrets.token_bytes`), handed to the tenant as 64 hex digits;
receivers use those digits as the HMAC key, as they used the derived secrets before. At rest
it is sealed with AES-256-GCM under a key derived from the notifier's master key
(NOTIFIER_SIGNING_KEY), with the client id and version as associated data: a copy of the
database (a backup, a replica, a role that may read the table) does not give the secrets
away, and a sealed secret moved to another client or version does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.notifier.signing import client_secret

SECRET_BYTES = 32
_FORMAT = b"\x01"  # AES-256-GCM, 12-byte nonce, key derived as below
_NONCE_BYTES = 12
_KEY_PURPOSE = b"callback-scheduler webhook secrets at rest v1"


class SecretUnreadable(Exception):
    """A sealed secret does not open with this master key."""


def new_secret() -> str:
    """A fresh random secret, as the tenant receives it."""
    return secrets.token_bytes(SECRET_BYTES).hex()


def fingerprint(secret: str) -> str:
    """Names a secret without giving it away (the operator and tenant compare these)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class Keyring:
    """Seals and opens tenants' secrets with a key derived from the master key."""

    def __init__(self, master_key: str) -> None:
        self._master_key = master_key
        key = hmac.new(master_key.encode(), _KEY_PURPOSE, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def derived(self, client_id: str) -> str:
        """The client's version 1: its secret until its first rotation."""
        return client_secret(self._master_key, client_id)

    def seal(self, client_id: str, version: int, secret: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _bound_to(client_id, version))
        return _FORMAT + nonce + sealed

    def open(self, client_id: str, version: int, sealed: bytes) -> str:
        if sealed[:1] != _FORMAT:
            raise SecretUnreadable(f"webhook secret v{version} of {client_id}: unknown format")
        nonce, data = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, data, _bound_to(client_id, version)).decode()
        except InvalidTag:
            raise SecretUnreadable(
                f"webhook secret v{version} of {client_id} does not open with this "
                "NOTIFIER_SIGNING_KEY (was the master key changed?)"
            ) from None


def _bound_to(client_id: str, version: int) -> bytes:
    return f"{client_id}\x00{version}".encode()
