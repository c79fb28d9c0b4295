"""Ports the local stack listens on, checked before anything starts.

A part that finds its port taken fails in its own way (nats-server logs [FTL], Python dies with
a traceback, our gRPC servers stop with "cannot listen": grpcserver.py turns off the SO_REUSEPORT
with which gRPC would share the port with the old holder), so the launcher checks every port
first and names the port, who holds it and the setting that moves it, in one line.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class PortClaim:
    """A port one part of the stack will listen on, and the setting that moves it."""

    port: int
    part: str
    # E.g. "NATS_PORT", or "METRICS_PORT + 6" for a port derived from a base setting.
    setting: str
    host: str = "127.0.0.1"


class PortInUse(RuntimeError):
    """A port of the stack is held by another program."""


def check_free(claims: Iterable[PortClaim]) -> None:
    """Raise PortInUse for the first claimed port that cannot be bound now."""
    for claim in claims:
        if not _bindable(claim.host, claim.port):
            raise PortInUse(describe(claim))


def taken(claims: Iterable[PortClaim]) -> PortClaim | None:
    """The first claimed port someone else listens on (after a part failed to start)."""
    return next((claim for claim in claims if not _bindable(claim.host, claim.port)), None)


def describe(claim: PortClaim) -> str:
    base = claim.setting.split(" ")[0]
    return (
        f"port {claim.port} ({claim.part}; setting {claim.setting}) is already in use by "
        f"{holder(claim.port)}. Stop that program, or move the port: {base}=<free port> make run"
    )


def holder(port: int) -> str:
    """Who listens on a TCP port, as far as this user may see."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
                continue
            if conn.pid is None:
                break
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(conn.pid)
                command = " ".join(" ".join(process.cmdline()).split())[:120]
                return f"{process.name()} (pid {conn.pid}: {command})"
            return f"pid {conn.pid}"
    return f"another program (not visible to this user; try `ss -ltnp 'sport = :{port}'`)"


def _bindable(host: str, port: int) -> bool:
    # SO_REUSEADDR as servers set it, so a closed connection in TIME_WAIT does not count; no
    # SO_REUSEPORT, so any listener does, even one that set SO_REUSEPORT itself (gRPC does).
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
