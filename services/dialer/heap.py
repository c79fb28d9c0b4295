"""Keeping the dialer's startup heap out of the cyclic garbage collector's way."""

from __future__ import annotations

import functools
import gc

# Allocations (less deallocations) between two young collections: CPython's default is 700.
# A thousand calls at once keep ~150 objects each alive for the call's length, so the young
# generation is mostly objects that survive it, and at 700 the dialer ran a young collection
# every few callbacks, a middle one every ten and, twice in a run of `make bench-sip` at
# 1,000, a full one over every live call: ~0.1 ms of CPU per callback, a tenth of the
# controller's. At 10,000, in the same bench: 14 collections instead of ~210, ~0.06 ms per
# callback, the whole run 2-10 % cheaper (paired runs, load 3-4). A young collection then
# looks at up to 10,000 objects (a pause of a few ms); the older generations' ratios stay.
YOUNG_THRESHOLD = 10_000


@functools.cache  # once per process: later calls would freeze calls' garbage for good
def freeze_startup_heap() -> None:
    """Move every object alive now (modules, settings, clients: the process's startup) out of
    the cyclic collector's sight, once per process (gc.freeze, the documented pattern); the
    garbage of startup is collected first, not frozen. Then raise the young generation's
    threshold to YOUNG_THRESHOLD (see there).

    A thousand callbacks at once keep some 200 objects each alive for the call's length, which
    promotes them and, every few thousand, makes the collector run full collections; each
    traversed the whole heap of the imported libraries. In `make bench-sip` at 1,000 at once
    this was about a tenth of the controller's CPU (frozen vs not, same code, one process each).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
