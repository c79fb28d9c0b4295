"""The sender's in-flight caps: in all, per receiving host, per tenant; idle state forgotten."""

from __future__ import annotations

import random

import pytest

from services.notifier.limits import Caps, InFlight

CAPS = Caps(total=200, per_host=8, per_tenant=50)


def test_a_full_host_and_a_full_tenant_are_left_out_of_the_next_claim() -> None:
    slots = InFlight(CAPS)
    for _ in range(8):
        slots.start("slow.example", "a")
    slots.start("fast.example", "b")
    room = slots.room(100)
    assert room.total == 100
    assert room.full_hosts == ("slow.example",)
    assert room.full_tenants == ()
    assert room.busy_hosts == {"slow.example": 8, "fast.example": 1}
    assert room.busy_tenants == {"a": 8, "b": 1}

    for index in range(42):  # tenant a reaches 50 over many hosts
        slots.start(f"h{index}.example", "a")
    assert slots.room(100).full_tenants == ("a",)


def test_the_claim_size_is_what_the_total_cap_leaves() -> None:
    slots = InFlight(Caps(total=10, per_host=8, per_tenant=50))
    for index in range(7):
        slots.start(f"h{index}.example", "a")
    assert slots.room(100).total == 3
    assert slots.room(2).total == 2
    for index in range(3):
        slots.start(f"g{index}.example", "a")
    assert slots.room(100).total == 0


def test_starting_beyond_a_cap_is_refused_not_queued() -> None:
    slots = InFlight(Caps(total=200, per_host=2, per_tenant=3))
    slots.start("h.example", "a")
    slots.start("h.example", "a")
    with pytest.raises(OverflowError):
        slots.start("h.example", "b")
    slots.start("other.example", "a")
    with pytest.raises(OverflowError):
        slots.start("third.example", "a")
    assert len(slots) == 3


def test_ending_what_never_started_is_a_bug() -> None:
    slots = InFlight(CAPS)
    slots.start("h.example", "a")
    with pytest.raises(ValueError, match="in flight"):
        slots.end("other.example", "a")
    with pytest.raises(ValueError, match="in flight"):
        slots.end("h.example", "b")
    slots.end("h.example", "a")
    assert len(slots) == 0


def test_idle_hosts_and_tenants_are_forgotten_so_random_subdomains_take_no_memory() -> None:
    """100,000 deliveries to as many random subdomains, up to 200 at a time: the tables
    never hold more than what is in flight, and nothing once all have ended."""
    rng = random.Random(19)
    slots = InFlight(CAPS)
    in_flight: list[tuple[str, str]] = []
    largest = 0
    for index in range(100_000):
        if len(in_flight) == CAPS.total or (in_flight and rng.random() < 0.5):
            slots.end(*in_flight.pop(rng.randrange(len(in_flight))))
        delivery = (f"{rng.getrandbits(64):016x}.attacker.example", f"tenant-{index % 7}")
        slots.start(*delivery)
        in_flight.append(delivery)
        largest = max(largest, len(slots.hosts))
        assert len(slots.hosts) <= len(in_flight) and len(slots.tenants) <= 7
    assert largest <= CAPS.total
    for delivery in in_flight:
        slots.end(*delivery)
    assert (len(slots), dict(slots.hosts), dict(slots.tenants)) == (0, {}, {})


def test_caps_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Caps(total=200, per_host=0, per_tenant=50)
