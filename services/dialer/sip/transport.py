"""SIP over UDP, TCP and TLS (RFC 3261 18, 26.2.1): one socket (or listener) per dialer,
messages in and out.

UDP bursts overflow Linux's default socket buffers (~200 KiB): with 1,000 callbacks at once
most datagrams were lost until the buffers were raised to a few MB, hence `buffer_bytes`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Protocol

from services.dialer.sip import counters, tls
from services.dialer.sip.message import Address, Message, ParseError, parse, stream_frame

log = logging.getLogger(__name__)
MESSAGES = counters.MESSAGES

OnMessage = Callable[[Message, Address], None]
# A destination could not be reached (connection refused, reset): the address and why.
OnError = Callable[[Address, str], None]


class Transport(Protocol):
    name: str  # "UDP", "TCP" or "TLS", as written in Via
    reliable: bool  # no retransmissions needed (RFC 3261 17.1.1.2)
    # Ask the peer to send its requests back on our connection (RFC 5923 `alias` in Via):
    # for a TLS dialer without a listener of its own.
    alias: bool
    local: Address  # the address we advertise in Via and Contact

    def send(self, data: bytes, to: Address) -> None:
        """Send without waiting; failures are reported to the transport's OnError."""
        ...

    def reach(self, to: Address) -> None:
        """Get ready to send to `to` soon (TCP: open the connection now, so that a call's
        first INVITE does not wait for it)."""
        ...

    def close(self) -> None: ...


def _sized(sock: socket.socket, buffer_bytes: int) -> None:
    if buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)


def _deliver(on_message: OnMessage, data: bytes, source: Address) -> None:
    try:
        message = parse(data)
    except ParseError as err:
        log.warning("unreadable SIP message", extra={"action": "drop", "error": str(err)})
        return
    on_message(message, source)


# Datagrams read in one turn of the event loop, at most: asyncio's own datagram transport
# reads one per turn, so a burst of a second's answers (hundreds waiting in the socket) took
# hundreds of turns, each with its select() and every timer due; the INVITEs' retransmission
# timers (T1) then fired before the answers waiting for them were read, and the copies sent
# made more answers to read: at 200 callbacks a second on a loaded machine the dialer fell
# minutes behind. The bound keeps one turn short enough for the timers.
READS_PER_TURN = 256


class UdpTransport:
    """One non-blocking UDP socket: reads every waiting datagram (up to READS_PER_TURN) when
    the socket is readable; sends at once, queueing only what the kernel refuses for now."""

    name = "UDP"
    alias = False
    reliable = False

    def __init__(self, sock: socket.socket, on_message: OnMessage, local: Address) -> None:
        self._sock = sock
        self._on_message = on_message
        self.local = local
        self._loop = asyncio.get_running_loop()
        self._waiting: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._closed = False
        self._sources: dict[tuple[str, int], Address] = {}
        self._loop.add_reader(sock.fileno(), self._read)

    @classmethod
    async def bind(
        cls,
        bind: Address,
        advertise: str,
        on_message: OnMessage,
        on_error: OnError,
        buffer_bytes: int,
    ) -> UdpTransport:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _sized(sock, buffer_bytes)
        sock.bind((bind.host, bind.port))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        return cls(sock, on_message, Address(advertise or bind.host, port))

    def _read(self) -> None:
        for _ in range(READS_PER_TURN):
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                # An ICMP error of an unconnected socket carries no address: the transaction
                # timers (RFC 3261 17.1.1.2 Timer B, 17.1.2.2 Timer F) turn the silence into
                # a timeout.
                log.debug("UDP error", extra={"action": "udp_error", "error": str(err)})
                continue
            source = self._sources.get(addr)
            if source is None:  # a few peers send everything: one Address each, not per read
                if len(self._sources) >= 4096:
                    self._sources.clear()
                source = self._sources[addr] = Address(str(addr[0]), int(addr[1]))
            _deliver(self._on_message, data, source)

    def send(self, data: bytes, to: Address) -> None:
        if self._closed:
            return
        MESSAGES.sent += 1
        address = (to.host, to.port)
        if self._waiting:  # keep the order of what is sent
            self._waiting.append((data, address))
            return
        try:
            self._sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self._waiting.append((data, address))
            self._loop.add_writer(self._sock.fileno(), self._flush)
        except OSError as err:
            log.debug("UDP error", extra={"action": "udp_error", "error": str(err)})

    def _flush(self) -> None:
        while self._waiting:
            data, address = self._waiting[0]
            try:
                self._sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.debug("UDP error", extra={"action": "udp_error", "error": str(err)})
            self._waiting.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def reach(self, to: Address) -> None:
        pass  # nothing to open

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()


class _Stream(asyncio.Protocol):
    """One TCP (or TLS) connection: frames messages by Content-Length (RFC 3261 18.3)."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._buffer = b""
        self.transport: asyncio.Transport | None = None
        self.peer = Address("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Address(str(host), int(port))
        self._owner.register(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (framed := stream_frame(self._buffer)) is not None:
            message, self._buffer = framed
            _deliver(self._owner.on_message, message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.unregister(self)


class TcpTransport:
    name = "TCP"
    alias = False
    reliable = True

    def __init__(self, on_message: OnMessage, on_error: OnError, buffer_bytes: int) -> None:
        self.on_message = on_message
        self.connections: dict[Address, _Stream] = {}
        self._on_error = on_error
        self._buffer_bytes = buffer_bytes
        # Messages waiting for a connection being opened, per destination.
        self._connecting: dict[Address, list[bytes]] = {}
        self._server: asyncio.Server | None = None
        self.local = Address("", 0)

    @classmethod
    async def bind(
        cls,
        bind: Address,
        advertise: str,
        on_message: OnMessage,
        on_error: OnError,
        buffer_bytes: int,
    ) -> TcpTransport:
        transport = cls(on_message, on_error, buffer_bytes)
        transport._server = await asyncio.get_running_loop().create_server(
            lambda: _Stream(transport), bind.host, bind.port, reuse_address=True
        )
        port = transport._server.sockets[0].getsockname()[1]
        transport.local = Address(advertise or bind.host, port)
        return transport

    def register(self, stream: _Stream) -> None:
        """A connection is up (ours or the peer's): reachable by the peer's address."""
        self.connections.setdefault(stream.peer, stream)

    def unregister(self, stream: _Stream) -> None:
        for key, known in list(self.connections.items()):
            if known is stream:
                del self.connections[key]

    def _stream_for(self, data: bytes, to: Address) -> _Stream | None:
        return self.connections.get(to)

    def send(self, data: bytes, to: Address) -> None:
        MESSAGES.sent += 1
        stream = self._stream_for(data, to)
        writer = stream.transport if stream is not None else None
        if writer is not None and not writer.is_closing():
            writer.write(data)
        elif to in self._connecting:
            self._connecting[to].append(data)
        else:
            self._connecting[to] = [data]
            connecting = asyncio.ensure_future(self._connect(to))
            connecting.add_done_callback(lambda _: None)

    def reach(self, to: Address) -> None:
        stream = self.connections.get(to)
        if stream is not None and stream.transport is not None:
            if not stream.transport.is_closing():
                return
        if to not in self._connecting:
            self._connecting[to] = []
            connecting = asyncio.ensure_future(self._connect(to))
            connecting.add_done_callback(lambda _: None)

    async def _connect(self, to: Address) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _sized(sock, self._buffer_bytes)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (to.host, to.port))
            _, stream = await self._open(sock, to)
        except OSError as err:  # ssl.SSLError included: a refused certificate
            sock.close()
            self._connecting.pop(to, None)
            self._on_error(to, f"{self.name} {to.host}:{to.port}: {tls.describe(err)}")
            return
        # Keyed by where we dialled, so responses and later requests reuse it (RFC 3261 18.1.1).
        self.connections[to] = stream
        assert stream.transport is not None
        for data in self._connecting.pop(to, []):
            stream.transport.write(data)

    async def _open(
        self, sock: socket.socket, to: Address
    ) -> tuple[asyncio.BaseTransport, _Stream]:
        return await asyncio.get_running_loop().create_connection(lambda: _Stream(self), sock=sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for stream in list(self.connections.values()):
            if stream.transport is not None:
                stream.transport.close()


# A peer that accepts the connection but never finishes the handshake (a plain SIP port given
# for a TLS one keeps silent): the connection is given up after this long, well before the
# INVITE's Timer B (64*T1 = 32 s), so that the call ends naming the handshake rather than as
# a bare "408 Request Timeout". A handshake is two round trips; 10 s is generous.
HANDSHAKE_TIMEOUT = 10.0


class TlsTransport(TcpTransport):
    """TCP with TLS on every connection (RFC 3261 26.2.1): reused per destination like TCP's.

    Every connection we open checks the peer's certificate and that it names the host we
    dialled (the proxy's host as configured, or the host of a Record-Route / Contact URI for
    in-dialog requests); a failed check fails the connection, and with it every transaction
    waiting for it (UserAgent.transport_failed: a 503 naming the reason). The listener runs
    only with a certificate of our own (server_context); without one, requests towards us
    can only come back on connections we opened.
    """

    name = "TLS"

    def __init__(
        self,
        on_message: OnMessage,
        on_error: OnError,
        buffer_bytes: int,
        client: ssl.SSLContext,
    ) -> None:
        super().__init__(on_message, on_error, buffer_bytes)
        self._client = client
        self.handshake_timeout = HANDSHAKE_TIMEOUT
        # Connections a peer opened to our listener (and ours, until verified): its
        # certificate was never checked, so they carry only responses to the requests that
        # came on them; requests go only on connections we opened and verified (connections).
        self._accepted: dict[Address, _Stream] = {}

    @classmethod
    async def bind_tls(
        cls,
        bind: Address,
        advertise: str,
        on_message: OnMessage,
        on_error: OnError,
        buffer_bytes: int,
        *,
        client: ssl.SSLContext,
        server: ssl.SSLContext | None,
    ) -> TlsTransport:
        transport = cls(on_message, on_error, buffer_bytes, client)
        # No listener: a request towards our Contact can only come on a connection we
        # opened, so ask the proxy to reuse it (RFC 5923; Kamailio: tcp_accept_aliases).
        transport.alias = server is None
        port = bind.port
        if server is not None:
            transport._server = await asyncio.get_running_loop().create_server(
                lambda: _Stream(transport), bind.host, bind.port, reuse_address=True, ssl=server
            )
            port = transport._server.sockets[0].getsockname()[1]
        # Without a listener the port is still what Via and Contact name (RFC 3261 18.2.2
        # sends responses there if our connection is gone): it should be where a listener
        # would be, so the default 5061 when none was given.
        transport.local = Address(advertise or bind.host, port or 5061)
        return transport

    def register(self, stream: _Stream) -> None:
        self._accepted.setdefault(stream.peer, stream)

    def unregister(self, stream: _Stream) -> None:
        super().unregister(stream)
        if self._accepted.get(stream.peer) is stream:
            del self._accepted[stream.peer]

    def close(self) -> None:
        super().close()
        for stream in list(self._accepted.values()):
            if stream.transport is not None:
                stream.transport.close()

    def _stream_for(self, data: bytes, to: Address) -> _Stream | None:
        stream = self.connections.get(to)
        if stream is None and data.startswith(b"SIP/2.0 "):  # a response (RFC 3261 18.2.2)
            stream = self._accepted.get(to)
        return stream

    async def _open(
        self, sock: socket.socket, to: Address
    ) -> tuple[asyncio.BaseTransport, _Stream]:
        return await asyncio.get_running_loop().create_connection(
            lambda: _Stream(self),
            sock=sock,
            ssl=self._client,
            # The name the certificate must carry: the host as we were given it.
            server_hostname=to.host,
            ssl_handshake_timeout=self.handshake_timeout,
        )
