"""How many webhook deliveries one sender may have in flight: in all, per receiving host and
per tenant (pure rules, no I/O).

The sender claims only what it can start at once: a claim skips the hosts and tenants at
their cap and takes at most the room each other one has left. A delivery therefore never
holds a slot while it waits for another, and a slow receiver (or a tenant with many) fills
only its own slots. Hosts and tenants with nothing in flight have no entry at all, so the
table is as large as what is in flight, however many host names (random subdomains) it saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Caps:
    total: int
    per_host: int
    per_tenant: int

    def __post_init__(self) -> None:
        if min(self.total, self.per_host, self.per_tenant) < 1:
            raise ValueError(f"every in-flight cap must be at least 1: {self}")


@dataclass(frozen=True)
class Room:
    """What the next claim may take: at most `total` deliveries, none of `full_hosts` or
    `full_tenants`, and of a busy host or tenant at most its cap less what it has in flight."""

    caps: Caps
    total: int
    full_hosts: tuple[str, ...]
    full_tenants: tuple[str, ...]
    busy_hosts: Mapping[str, int]
    busy_tenants: Mapping[str, int]


class InFlight:
    """The deliveries a sender has started and not yet finished, counted by host and tenant."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._hosts: Counter[str] = Counter()
        self._tenants: Counter[str] = Counter()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def hosts(self) -> Mapping[str, int]:
        """In flight per host, busy hosts only."""
        return self._hosts

    @property
    def tenants(self) -> Mapping[str, int]:
        """In flight per tenant, busy tenants only."""
        return self._tenants

    def room(self, at_most: int) -> Room:
        """What a claim may take now (at most `at_most` in all)."""
        caps = self.caps
        return Room(
            caps=caps,
            total=max(0, min(at_most, caps.total - self._count)),
            full_hosts=tuple(sorted(h for h, n in self._hosts.items() if n >= caps.per_host)),
            full_tenants=tuple(sorted(t for t, n in self._tenants.items() if n >= caps.per_tenant)),
            busy_hosts=dict(self._hosts),
            busy_tenants=dict(self._tenants),
        )

    def start(self, host: str, tenant: str) -> None:
        """Count a delivery that starts now. A claim made from `room()` never exceeds a cap;
        anything else is a bug, refused loudly rather than queued behind a full host."""
        caps = self.caps
        if (
            self._count >= caps.total
            or self._hosts[host] >= caps.per_host
            or self._tenants[tenant] >= caps.per_tenant
        ):
            raise OverflowError(f"no room for a delivery to {host!r} of {tenant!r}")
        self._count += 1
        self._hosts[host] += 1
        self._tenants[tenant] += 1

    def end(self, host: str, tenant: str) -> None:
        """A delivery is over; an idle host or tenant is forgotten at once."""
        if self._hosts[host] < 1 or self._tenants[tenant] < 1:
            raise ValueError(f"no delivery to {host!r} of {tenant!r} is in flight")
        self._count -= 1
        for table, key in ((self._hosts, host), (self._tenants, tenant)):
            table[key] -= 1
            if table[key] == 0:
                del table[key]
