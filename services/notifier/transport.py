"""An httpx client whose connections are checked against the SSRF rules *after* DNS
resolution and at connect time, so a hostname that resolves to a private address (or is
re-pointed there later) is refused, not just a literal IP in the URL."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Sequence

import certifi
import httpcore
import httpx

from services.notifier.addresses import Network, refusal


class AddressRefused(Exception):
    """The URL's host resolves to an address webhooks may not reach."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses if any address is off-limits, then connects to a
    checked address (TLS still verifies the original host name)."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = tuple(allowed)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from err
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            reason = refusal(address, self._allowed)
            if reason is not None:
                raise AddressRefused(reason)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = err
        raise error or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("webhooks may not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def make_client(
    allowed: Sequence[Network],
    *,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int,
) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport()
    # httpx has no public way to pass httpcore a network backend; replace the pool it built
    # with one that uses ours (same settings as httpx's defaults otherwise).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(cafile=certifi.where()),
        max_connections=max_connections,
        max_keepalive_connections=max_connections // 4,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(allowed),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "callback-scheduler-webhooks/1"},
    )
