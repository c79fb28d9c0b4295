"""TlsTransport's choice of connection: a connection a peer opened to our listener carries
responses back, never our requests (its certificate was never checked)."""

from __future__ import annotations

import asyncio

from services.dialer.sip import tls
from services.dialer.sip.message import Address
from services.dialer.sip.transport import TlsTransport, _Stream
from tests.support.ports import free_port_block


class RecordingWriter:
    """Stands in for the asyncio transport of an accepted connection: keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_requests_never_go_on_a_connection_the_peer_opened() -> None:
    failed = asyncio.get_running_loop().create_future()
    transport = TlsTransport(
        lambda message, source: None,
        lambda to, error: failed.set_result((to, error)),
        0,
        tls.client_context(),
    )
    # A peer connected to our listener from an address nothing listens on for us to dial.
    peer = Address("127.0.0.1", free_port_block(1))
    accepted = _Stream(transport)
    writer = RecordingWriter()
    accepted.transport = writer  # type: ignore[assignment]
    accepted.peer = peer
    transport.register(accepted)

    transport.send(b"SIP/2.0 200 OK\r\n\r\n", peer)
    assert writer.written == [b"SIP/2.0 200 OK\r\n\r\n"]  # the answer to its request

    transport.send(b"BYE sips:callback@127.0.0.1 SIP/2.0\r\n\r\n", peer)
    # Not on the accepted connection (send writes at once when it does): a verified
    # connection of our own is dialled instead, and here refused, which is reported.
    assert writer.written == [b"SIP/2.0 200 OK\r\n\r\n"]
    to, error = await failed
    assert to == peer and error.startswith(f"TLS 127.0.0.1:{peer.port}: "), error
    transport.close()
