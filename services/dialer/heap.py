"""Keeping the dialer's startup heap out of the cyclic garbage collector's way."""

from __future__ import annotations

import functools
import gc


@functools.cache  # once per process: later calls would freeze calls' garbage for good
def freeze_startup_heap() -> None:
    """Move every object alive now (modules, settings, clients: the process's startup) out of
    the cyclic collector's sight, once per process (gc.freeze, the documented pattern); the
    garbage of startup is collected first, not frozen.

    A thousand callbacks at once keep some 200 objects each alive for the call's length, which
    promotes them and, every few thousand, makes the collector run full collections; each
    traversed the whole heap of the imported libraries. In `make bench-sip` at 1,000 at once
    this was about a tenth of the controller's CPU (frozen vs not, same code, one process each).
    """
    gc.collect()
    gc.freeze()
