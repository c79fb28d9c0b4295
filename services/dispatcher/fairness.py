"""How one pass over the due work shares the dialers between tenants (free of SQL).

Fairness between queues used to be the only kind: a tenant with many queues, or with a
queue whose limit is as large as the dialers, could fill every dialer slot, and another
tenant's single task waited behind all of its calls. Now each tenant with due work gets at
most an equal share of a pass, and when the dialers are nearly full their free slots go
first to the tenants with the fewest callbacks in progress (max-min fairness): a tenant
with 100,000 due tasks takes the slots nobody else wants, never the next one another
tenant's task is waiting for.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def tenant_share(pass_size: int, least: int, due_tenants: int) -> int:
    """Tasks each tenant with due work may claim in one pass: an equal share, at least
    `least` (a lone busy tenant is claimed in big batches)."""
    return max(least, pass_size // max(due_tenants, 1))


def reserve(capacity: int, fraction: float) -> int:
    """Slots of the dialers no single tenant may take (at least one, when there is a cap
    and a fraction): kept for the others, so that a tenant falling due while another one
    fills the dialers starts at once, not when one of the other's calls ends."""
    if not capacity or fraction <= 0:
        return 0
    return min(max(1, round(capacity * fraction)), capacity - 1)


def allotments(
    due_tenants: Sequence[str],
    in_progress: Mapping[str, int],
    free_slots: int | None,
    share: int,
    tenant_cap: int | None = None,
) -> dict[str, int]:
    """How many callbacks each tenant in `due_tenants` may start now: `share` each when
    the dialers have no cap (free_slots None); else the free slots one at a time to the
    tenant with the fewest in progress (counting what it was given), at most `share`
    each, and never so many that a tenant holds more than `tenant_cap` slots. Ties go by
    the order of `due_tenants` (shuffled by the caller)."""
    if free_slots is None:
        return dict.fromkeys(due_tenants, share)
    cap = free_slots + max(in_progress.values(), default=0) if tenant_cap is None else tenant_cap
    if free_slots >= share * len(due_tenants) and all(
        in_progress.get(t, 0) + share <= cap for t in due_tenants
    ):
        return dict.fromkeys(due_tenants, share)  # room for all: no need to go slot by slot
    given = dict.fromkeys(due_tenants, 0)
    levels = [(in_progress.get(t, 0), order, t) for order, t in enumerate(due_tenants)]
    levels = [entry for entry in levels if entry[0] < cap]
    heapq.heapify(levels)
    remaining = free_slots
    while remaining > 0 and levels:
        level, order, tenant = heapq.heappop(levels)
        given[tenant] += 1
        remaining -= 1
        if given[tenant] < share and level + 1 < cap:
            heapq.heappush(levels, (level + 1, order, tenant))
    return given
