"""An httpx client whose connections are checked against the SSRF rules *after* DNS
resolution and at connect time, so a hostname that resolves to a private address (or is
re-pointed there later) is refused, not just a literal IP in the URL.

httpcore tells a network backend the host and port, not the scheme: http and https URLs go
through two connection pools, each with a backend that knows its scheme."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable

import certifi
import httpcore
import httpx

from services.notifier.addresses import Policy, port_refusal, refusal, scheme_refusal


class AddressRefused(Exception):
    """The URL's host resolves to an address webhooks may not reach."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Refuses a port off-limits, resolves the host itself, refuses if any address is
    off-limits (for this scheme), then connects to a checked address (TLS still verifies the
    original host name)."""

    def __init__(self, policy: Policy, scheme: str = "https") -> None:
        self._inner = httpcore.AnyIOBackend()
        self._policy = policy
        self._scheme = scheme

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        reason = port_refusal(port, self._policy)
        if reason is not None:
            raise AddressRefused(reason)
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from err
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            reason = refusal(address, self._policy.allowed_networks) or scheme_refusal(
                self._scheme, address, self._policy
            )
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
    policy: Policy,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int,
) -> httpx.AsyncClient:
    """The notifier's client: https through one guarded pool, http through another (its
    backend refuses addresses outside the policy's http networks); other schemes fail."""
    return httpx.AsyncClient(
        transport=_guarded_transport(GuardedBackend(policy, "https"), max_connections),
        mounts={"http://": _guarded_transport(GuardedBackend(policy, "http"), max_connections)},
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "callback-scheduler-webhooks/1"},
    )


def _guarded_transport(backend: GuardedBackend, max_connections: int) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport()
    # httpx has no public way to pass httpcore a network backend; replace the pool it built
    # with one that uses ours (same settings as httpx's defaults otherwise).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(cafile=certifi.where()),
        max_connections=max_connections,
        max_keepalive_connections=max_connections // 4,
        keepalive_expiry=5.0,
        network_backend=backend,
    )
    return transport
