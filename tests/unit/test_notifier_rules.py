"""The notifier's rules: which addresses are refused, retry decisions, signatures."""

from __future__ import annotations

import random

import pytest

from services.notifier.addresses import Policy, parse_networks, refusal
from services.notifier.policy import (
    DEAD,
    DELIVERED,
    FAILED,
    RETRY,
    RetryPolicy,
    judge,
    predecessors,
    sequence,
)
from services.notifier.signing import client_secret, sign, verify
from services.notifier.transport import AddressRefused, GuardedBackend

# Address checks only: nothing here opens a connection.
REFUSED = [
    "127.0.0.1",
    "127.0.0.2",
    "::1",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.1",
    "192.168.1.10",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "100.64.0.1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "240.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allowed = parse_networks(["127.0.0.1/32", "10.1.0.0/16"])
    assert refusal("127.0.0.1", allowed) is None
    assert refusal("10.1.2.3", allowed) is None
    assert refusal("127.0.0.2", allowed) is not None
    assert refusal("10.2.0.1", allowed) is not None


async def test_a_host_name_is_checked_after_resolution_before_any_connection() -> None:
    backend = GuardedBackend(Policy())
    with pytest.raises(AddressRefused, match="loopback"):
        await backend.connect_tcp("localhost", 443, timeout=2)


async def test_unix_sockets_are_refused() -> None:
    with pytest.raises(AddressRefused):
        await GuardedBackend(Policy()).connect_unix_socket("/tmp/x.sock")


POLICY = RetryPolicy(max_attempts=3, max_age_seconds=100, base_seconds=1, cap_seconds=8)


@pytest.mark.parametrize(
    ("status", "error", "retryable", "attempt", "expected"),
    [
        (200, "", False, 1, DELIVERED),
        (204, "", False, 1, DELIVERED),
        (500, "", False, 1, RETRY),
        (503, "", False, 2, RETRY),
        (429, "", False, 1, RETRY),
        (410, "", False, 1, FAILED),
        (400, "", False, 1, FAILED),
        (301, "", False, 1, FAILED),
        (None, "timed out", True, 1, RETRY),
        (None, "refused address", False, 1, FAILED),
        (500, "", False, 3, DEAD),
        (None, "timed out", True, 3, DEAD),
    ],
)
def test_judge(
    status: int | None, error: str, retryable: bool, attempt: int, expected: str
) -> None:
    verdict = judge(
        POLICY,
        attempt=attempt,
        age_seconds=1,
        status_code=status,
        error=error,
        retryable_error=retryable,
    )
    assert verdict.outcome == expected
    assert (verdict.retry_after is not None) == (expected == RETRY)


def test_too_old_deliveries_are_dead_even_with_attempts_left() -> None:
    verdict = judge(
        POLICY, attempt=1, age_seconds=101, status_code=500, error="", retryable_error=False
    )
    assert verdict.outcome == DEAD


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        delays = [POLICY.backoff(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_events_of_a_task_are_ordered_by_attempt_then_kind() -> None:
    order = [(1, "before"), (1, "success"), (1, "after"), (2, "before_again"), (2, "after")]
    assert sorted(order, key=lambda e: sequence(*e)) == order
    assert sequence(1, "after") < sequence(2, "before_again")


def test_signatures_verify_and_catch_tampering_and_replays() -> None:
    secret = client_secret("master", "client-a")
    assert secret != client_secret("master", "client-b")
    body = b'{"event":"after"}'
    signature = sign(secret, 1_800_000_000, body)
    assert verify(secret, "1800000000", body, signature, now=1_800_000_010)
    assert not verify(secret, "1800000000", body + b" ", signature, now=1_800_000_010)
    assert not verify(secret, "1800000001", body, signature, now=1_800_000_010)
    assert not verify(secret, "1800000000", body, signature, now=1_800_001_000)  # replayed
    assert not verify(secret, "x", body, signature, now=1_800_000_010)


ALL_URLS = frozenset({"before", "before_again", "success", "after"})


@pytest.mark.parametrize(
    ("attempt", "event", "with_url", "succeeded", "expected"),
    [
        (1, "before", ALL_URLS, False, 0),
        (2, "before_again", ALL_URLS, False, 1),
        (3, "before_again", ALL_URLS, False, 2),
        (1, "success", ALL_URLS, True, 1),
        (1, "after", ALL_URLS, True, 2),  # before, success
        (1, "after", ALL_URLS, False, 1),  # before
        (3, "after", ALL_URLS, True, 4),  # before, before_again x2, success
        (3, "after", ALL_URLS, False, 3),
        (3, "after", frozenset({"after"}), True, 0),
        (3, "after", frozenset({"before_again", "after"}), False, 2),
        (2, "success", frozenset({"before", "success"}), True, 1),
    ],
)
def test_predecessors_count_the_earlier_events_with_a_url(
    attempt: int, event: str, with_url: frozenset[str], succeeded: bool, expected: int
) -> None:
    assert predecessors(attempt, event, with_url, succeeded) == expected
