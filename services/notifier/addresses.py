"""Which addresses a webhook may connect to (SSRF protection), decided per resolved address.

Refused unless allowed by setting: loopback, private (RFC 1918, unique local), link-local
(incl. cloud metadata 169.254.169.254), shared (100.64/10), multicast, reserved, unspecified.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")


def parse_networks(specs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def refusal(address: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why a webhook may not connect to `address`, or None if it may."""
    ip: Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (or cloud metadata)"),
        (ip.is_private, "private"),
        (ip in _SHARED if isinstance(ip, ipaddress.IPv4Address) else False, "shared"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_unspecified, "unspecified"),
    )
    for hit, kind in checks:
        if hit:
            return f"{ip} is a {kind} address; webhooks may not connect to it"
    return None
