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


def allotments(
    due_tenants: Sequence[str],
    in_progress: Mapping[str, int],
    free_slots: int | None,
    share: int,
) -> dict[str, int]:
    """How many callbacks each tenant in `due_tenants` may start now: `share` each when
    the dialers have no cap (free_slots None); else the free slots one at a time to the
    tenant with the fewest in progress (counting what it was given), at most `share`
    each. Ties go by the order of `due_tenants` (shuffled by the caller)."""
    if free_slots is None or free_slots >= share * len(due_tenants):
        return dict.fromkeys(due_tenants, share)
    given = dict.fromkeys(due_tenants, 0)
    levels = [(in_progress.get(t, 0), order, t) for order, t in enumerate(due_tenants)]
    heapq.heapify(levels)
    remaining = free_slots
    while remaining > 0 and levels:
        level, order, tenant = heapq.heappop(levels)
        given[tenant] += 1
        remaining -= 1
        if given[tenant] < share:
            heapq.heappush(levels, (level + 1, order, tenant))
    return given
