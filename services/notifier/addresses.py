"""Where a webhook may connect (SSRF protection), decided per resolved address and port.

By default a webhook reaches only globally routable addresses (`ipaddress`'s `is_global`),
on ports 80 and 443, over https. Refused unless the operator allows them by setting:

- addresses that are not globally routable: loopback, private (RFC 1918, unique local),
  link-local (incl. cloud metadata 169.254.169.254), shared (100.64/10), benchmarking,
  documentation, multicast, reserved, unspecified (`allowed_networks`);
- IPv6 addresses that carry an IPv4 address inside (IPv4-mapped and -translated, IPv4-
  compatible, 6to4 2002::/16, Teredo 2001::/32, NAT64 64:ff9b::/96 and 64:ff9b:1::/48)
  when that IPv4 address is not globally routable: `2002:7f00:1::1` is 127.0.0.1 through a
  6to4 relay, `64:ff9b::a00:1` is 10.0.0.1 through a NAT64 gateway;
- ports other than 80 and 443 (`allowed_ports`);
- plain http, to any address outside `http_networks`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = frozenset({80, 443})

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


@dataclass(frozen=True)
class Policy:
    """The operator's exceptions to the defaults (all empty: public https on 80/443 only)."""

    allowed_networks: tuple[Network, ...] = ()
    http_networks: tuple[Network, ...] = ()
    allowed_ports: frozenset[int] = field(default=DEFAULT_PORTS)


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """ "10.1.0.0/16, 127.0.0.1" as networks (blank items ignored)."""
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in specs if s.strip())


def parse_ports(spec: str) -> frozenset[int]:
    """ "80,443,8000-8999" as a set of ports."""
    ports: set[int] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        low, _, high = item.partition("-")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{item!r} is not a port or a range of ports (1-65535)")
        ports.update(range(first, last + 1))
    return frozenset(ports)


def port_refusal(port: int, policy: Policy) -> str | None:
    """Why a webhook may not connect to this port, or None if it may."""
    if port in policy.allowed_ports:
        return None
    return (
        f"port {port} is not allowed for webhooks (only 80 and 443 unless the operator allows it)"
    )


def scheme_refusal(scheme: str, address: str, policy: Policy) -> str | None:
    """Why a webhook may not use this scheme to this address, or None if it may."""
    if scheme == "https":
        return None
    if scheme == "http" and _in(_plain(address), policy.http_networks):
        return None
    return (
        f"plain {scheme} to {address} is not allowed for webhooks: use an https URL "
        "(the operator may allow http to a network)"
    )


def refusal(address: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why a webhook may not connect to `address`, or None if it may."""
    ip = _plain(address)
    if _in(ip, allowed):
        return None
    embedded = None
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        embedded = _embedded_ipv4(ip)
    if embedded is None:
        kind = _not_public(ip)
        return None if kind is None else f"{ip} is {kind}; webhooks may not connect to it"
    # An address that carries an IPv4 address reaches that address (through a relay or a
    # gateway): judged by it. Python counts NAT64 as reserved, but with DNS64 it is how an
    # IPv6-only cluster reaches public IPv4 receivers.
    how, inner = embedded
    if how == "a Teredo":  # a tunnel through NATs to anywhere: never a webhook's
        return f"{ip} is a Teredo address (a tunnel to {inner}); webhooks may not connect to it"
    inner_kind = _not_public(inner)
    if inner_kind is None:
        return None
    return (
        f"{ip} is {how} address of {inner}, which is {inner_kind}; webhooks may not connect to it"
    )


def _plain(address: str) -> Address:
    """The address without a zone index; an IPv4-mapped IPv6 address as the IPv4 it is (a
    socket connects to that)."""
    ip: Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(ip: Address, networks: Sequence[Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address some IPv6 address ranges carry, and which range it is."""
    if ip.sixtofour is not None:
        return "a 6to4", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo", ip.teredo[1]
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in network for network in _NAT64):
        return "a NAT64", last32
    if ip in _IPV4_TRANSLATED:
        return "an IPv4-translated", last32
    if ip in _IPV4_COMPATIBLE:
        return "an IPv4-compatible", last32
    return None


def _not_public(ip: Address) -> str | None:
    """What kind of address this is if not a public one (multicast counts as global for
    `ipaddress`, not for webhooks)."""
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (or cloud metadata)"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "a shared address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.teredo is not None, "a Teredo address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a globally routable address"),
    )
    return next((kind for hit, kind in checks if hit), None)
