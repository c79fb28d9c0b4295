"""Where webhooks may connect (services/notifier/addresses.py, transport.py): one test per
way an attacker's URL could reach the operator's network. Nothing here connects anywhere
except to a local listener the test opens itself."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.notifier.addresses import (
    Policy,
    parse_networks,
    parse_ports,
    port_refusal,
    refusal,
    scheme_refusal,
)
from services.notifier.settings import NotifierSettings
from services.notifier.transport import AddressRefused, GuardedBackend, make_client

REFUSED = {
    # private, loopback, link-local (cloud metadata), shared, unique local
    "10.1.2.3": "private",
    "192.168.0.1": "private",
    "172.16.5.4": "private",
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "169.254.169.254": "link-local",
    "fe80::1%eth0": "link-local",
    "100.64.0.1": "shared",
    "fd00::1": "private",
    # documentation, benchmarking, reserved: not globally routable either
    "192.0.2.1": "private",
    "198.18.0.1": "private",
    "240.0.0.1": "",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    # 6to4 (2002::/16) of loopback, private and link-local IPv4 addresses
    "2002:7f00:1::1": "6to4 address of 127.0.0.1",
    "2002:a00:1::1": "6to4 address of 10.0.0.1",
    "2002:a9fe:a9fe::1": "6to4 address of 169.254.169.254",
    # Teredo (2001::/32), whatever it embeds
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:0:a00:1::1": "Teredo",
    # IPv4-mapped: the socket connects to the IPv4 address itself
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    # NAT64, IPv4-compatible and IPv4-translated forms of internal IPv4 addresses
    "64:ff9b::7f00:1": "NAT64 address of 127.0.0.1",
    "64:ff9b::a00:1": "NAT64 address of 10.0.0.1",
    "64:ff9b:1::a9fe:a9fe": "NAT64 address of 169.254.169.254",
    "::127.0.0.1": "IPv4-compatible address of 127.0.0.1",
    "::ffff:0:a00:1": "IPv4-translated address of 10.0.0.1",
}
ALLOWED = [
    "8.8.8.8",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_an_address_that_is_not_globally_routable_is_refused(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None
    assert why in reason and "webhooks may not connect" in reason


@pytest.mark.parametrize("address", ALLOWED)
def test_a_globally_routable_address_is_allowed(address: str) -> None:
    assert refusal(address) is None


def test_the_operators_networks_are_allowed_and_nothing_next_to_them() -> None:
    allowed = parse_networks(["127.0.0.1/32", " 10.1.0.0/16", ""])
    assert refusal("127.0.0.1", allowed) is None
    assert refusal("::ffff:127.0.0.1", allowed) is None  # the same socket address
    assert refusal("10.1.200.3", allowed) is None
    assert refusal("127.0.0.2", allowed) is not None
    assert refusal("2002:7f00:1::1", allowed) is not None  # 6to4 is not 127.0.0.1/32


@pytest.mark.parametrize("port", [80, 443])
def test_ports_80_and_443_are_allowed_by_default(port: int) -> None:
    assert port_refusal(port, Policy()) is None


@pytest.mark.parametrize("port", [22, 25, 6379, 5432, 8080, 8443, 9200])
def test_other_ports_are_refused_unless_allowed(port: int) -> None:
    reason = port_refusal(port, Policy())
    assert reason is not None and f"port {port}" in reason
    assert port_refusal(port, Policy(allowed_ports=parse_ports("80,443,22-10000"))) is None


def test_port_lists_and_ranges() -> None:
    assert parse_ports("80, 443,8000-8002,") == {80, 443, 8000, 8001, 8002}
    for bad in ("0", "70000", "9000-8000", "http"):
        with pytest.raises(ValueError):
            parse_ports(bad)


def test_plain_http_is_refused_outside_the_http_networks() -> None:
    policy = Policy(http_networks=parse_networks(["203.0.113.0/24", "127.0.0.1/32"]))
    assert scheme_refusal("https", "8.8.8.8", Policy()) is None
    reason = scheme_refusal("http", "8.8.8.8", policy)
    assert reason is not None and "https" in reason
    assert scheme_refusal("http", "203.0.113.9", policy) is None
    assert scheme_refusal("http", "::ffff:127.0.0.1", policy) is None
    assert scheme_refusal("ftp", "203.0.113.9", policy) is not None


@pytest.fixture
def resolves_to(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """A DNS of the test's making: host name -> the addresses it answers."""
    answers: dict[str, list[str]] = {}
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self: Any, host: str, port: int, *args: Any, **kw: Any) -> Any:
        if host not in answers:
            return await real(self, host, port, *args, **kw)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in answers[host]
        ]

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    yield answers


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        (["10.0.0.7"], "private"),
        (["169.254.169.254"], "link-local"),
        (["93.184.216.34", "127.0.0.1"], "loopback"),  # one bad answer among good ones
        (["2002:7f00:1::1"], "6to4"),
    ],
)
async def test_a_name_that_resolves_to_an_internal_address_is_refused_before_connecting(
    resolves_to: dict[str, list[str]], answers: list[str], why: str
) -> None:
    resolves_to["hooks.attacker.example"] = answers
    with pytest.raises(AddressRefused, match=why):
        await GuardedBackend(Policy()).connect_tcp("hooks.attacker.example", 443, timeout=2)


async def test_a_port_is_refused_before_the_name_is_even_resolved(
    resolves_to: dict[str, list[str]],
) -> None:
    resolves_to["hooks.example"] = ["93.184.216.34"]
    with pytest.raises(AddressRefused, match="port 6379"):
        await GuardedBackend(Policy()).connect_tcp("hooks.example", 6379, timeout=2)


async def test_the_client_refuses_http_and_ports_as_the_settings_say(
    resolves_to: dict[str, list[str]],
) -> None:
    """Through the real client the notifier uses: the scheme picks the guarded pool."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        resolves_to["local.test"] = ["127.0.0.1"]
        settings = NotifierSettings(
            database_url="postgresql://x@y/z",  # type: ignore[arg-type]
            signing_key="k",  # type: ignore[arg-type]
            allowed_networks="127.0.0.1/32",
            allowed_ports=f"80,443,{port}",
        )
        async with make_client(
            settings.address_policy, connect_timeout=2, read_timeout=2, max_connections=4
        ) as client:
            # Loopback allowed, its port allowed, but plain http to it is not.
            with pytest.raises(AddressRefused, match="plain http"):
                await client.post(f"http://local.test:{port}/hook")
            with pytest.raises(AddressRefused, match="port 1"):
                await client.post("https://local.test:1/hook")
            with pytest.raises(AddressRefused, match="6to4"):
                await client.post("https://[2002:7f00:1::1]/hook")
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.post(f"ftp://local.test:{port}/hook")


def test_bad_network_or_port_settings_stop_the_notifier_at_start() -> None:
    with pytest.raises(ValueError, match="NOTIFIER_ALLOWED_PORTS"):
        NotifierSettings(
            database_url="postgresql://x@y/z",  # type: ignore[arg-type]
            signing_key="k",  # type: ignore[arg-type]
            allowed_ports="80,99999",
        )
