"""Free loopback ports for the servers tests and benchmarks start."""

from __future__ import annotations

import contextlib
import socket

# Ports handed out by this process. The OS forgets a port once the probing socket closes, so
# without this two calls could return overlapping ports before either stack has bound them.
_handed_out: set[int] = set()


def free_port() -> int:
    return free_port_block(1)


def free_port_block(size: int = 10) -> int:
    """A port p such that p .. p+size-1 are all free now and not handed out before in this
    process (replica i listens on p+i)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        block = set(range(base, base + size))
        if base + size > 65535 or block & _handed_out:
            continue
        try:
            with contextlib.ExitStack() as sockets:
                for port in block:
                    sock = sockets.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.update(block)
        return base
