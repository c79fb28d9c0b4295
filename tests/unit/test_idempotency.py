"""The Idempotency-Key rules: which keys are accepted, what makes two requests the same."""

from __future__ import annotations

import pytest

from services.api import idempotency
from services.common.errors import InvalidInput


@pytest.mark.parametrize("key", ["a", "x" * 255, " ~!", "550e8400-e29b-41d4-a716-446655440000"])
def test_printable_ascii_keys_up_to_255_characters_are_accepted(key: str) -> None:
    assert idempotency.checked_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb", "a\x7fb", "a\nb"])
def test_other_keys_are_refused_naming_the_header(key: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        idempotency.checked_key(key)
    assert refused.value.violations[0].field == "Idempotency-Key"


def test_the_hash_tells_rpcs_and_requests_apart() -> None:
    one = idempotency.request_hash("CreateQueue", b"body")
    assert one == idempotency.request_hash("CreateQueue", b"body")
    assert one != idempotency.request_hash("CreateTasks", b"body")
    assert one != idempotency.request_hash("CreateQueue", b"other")


def test_a_reused_key_is_a_422_naming_the_key() -> None:
    error = idempotency.reused("k-1")
    assert error.http_status == 422
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert "'k-1'" in error.message
