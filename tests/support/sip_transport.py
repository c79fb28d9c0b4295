"""A SIP Transport for unit tests of the SIP stack: it sends nothing and keeps every message."""

from __future__ import annotations

from services.dialer.sip.message import Address


class CapturingTransport:
    """Keeps every message sent. `reliable=True` (TCP-like) starts no retransmission timers,
    so a test has none to clean up; False makes the transactions behave as over UDP."""

    name = "UDP"
    alias = False
    local = Address("127.0.0.1", 5060)

    def __init__(self, *, reliable: bool = True) -> None:
        self.reliable = reliable
        self.sent: list[bytes] = []

    def send(self, data: bytes, to: Address) -> None:
        self.sent.append(data)

    def reach(self, to: Address) -> None:
        pass

    def close(self) -> None:
        pass
