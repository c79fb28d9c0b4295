"""Tenants' webhook secrets: random, sealed at rest, and both signatures during an overlap
(services/notifier/keyring.py, signing.py). The rotation itself runs against PostgreSQL in
tests/e2e/test_webhook_secrets.py."""

from __future__ import annotations

import pytest

from services.notifier.keyring import Keyring, SecretUnreadable, fingerprint, new_secret
from services.notifier.signing import (
    SIGNATURE_HEADER,
    SIGNATURES_HEADER,
    client_secret,
    sign,
    signature_headers,
    verify,
)

NOW = 1_800_000_000
BODY = b'{"event":"after"}'


def test_new_secrets_are_random_32_bytes_as_hex() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) == 64 and int(s, 16) >= 0 for s in secrets)


def test_a_sealed_secret_opens_only_for_its_client_version_and_master_key() -> None:
    keyring = Keyring("master")
    secret = new_secret()
    sealed = keyring.seal("acme", 2, secret)
    assert secret.encode() not in sealed and bytes.fromhex(secret) not in sealed
    assert keyring.open("acme", 2, sealed) == secret
    assert keyring.seal("acme", 2, secret) != sealed  # a fresh nonce each time
    for client, version, key in (("other", 2, "master"), ("acme", 3, "master"), ("acme", 2, "x")):
        with pytest.raises(SecretUnreadable) as refused:
            Keyring(key).open(client, version, sealed)
        assert secret not in str(refused.value)


def test_version_1_is_the_secret_every_client_had_before() -> None:
    assert Keyring("master").derived("acme") == client_secret("master", "acme")


def test_one_secret_one_signature_in_both_headers() -> None:
    secret = new_secret()
    headers = signature_headers([secret], NOW, BODY)
    assert headers[SIGNATURE_HEADER] == headers[SIGNATURES_HEADER] == sign(secret, NOW, BODY)


def test_during_an_overlap_both_sign_and_a_receiver_verifies_with_either() -> None:
    old, new = new_secret(), new_secret()
    headers = signature_headers([new, old], NOW, BODY)
    listed = headers[SIGNATURES_HEADER]
    assert listed == f"{sign(new, NOW, BODY)},{sign(old, NOW, BODY)}"
    # The single-value header keeps the secret receivers had before the rotation: a
    # receiver comparing it whole (the README's code before) does not break at rotation.
    assert headers[SIGNATURE_HEADER] == sign(old, NOW, BODY)
    for secret in (old, new):
        assert verify(secret, str(NOW), BODY, listed, now=NOW)
    assert verify(old, str(NOW), BODY, headers[SIGNATURE_HEADER], now=NOW)
    assert not verify(new_secret(), str(NOW), BODY, listed, now=NOW)
    assert not verify(new, str(NOW), BODY + b" ", listed, now=NOW)
    assert not verify(new, str(NOW), BODY, listed, now=NOW + 301)  # a replay


def test_fingerprints_name_a_secret_without_giving_it_away() -> None:
    secret = new_secret()
    assert fingerprint(secret) == fingerprint(secret) != fingerprint(new_secret())
    assert fingerprint(secret) not in secret
