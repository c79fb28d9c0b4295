"""Simultaneous callbacks through the sip backend against sipp phones on loopback.

For each size N (default 200, 500, 1000): phone A (127.0.0.2) and phone B (127.0.0.3) take N
calls each; the controller (the same SipBackend the dialer runs) places N callbacks at once;
callbacks start at SIP_BENCH_RATE per second (250) and B talks until the last one has
been connected for 2 s, so all N are connected together. Reported per size, min/median/max
over repeats: callbacks connected with teardown confirmed, lost (anything else), the peak
of simultaneously connected callbacks, controller CPU per callback, SIP retransmissions,
and whether both phones' sipp exited 0.

`make bench-sip` runs it; results go to bench/results/sip.json and sip.md.
Environment: SIP_BENCH_SIZES (e.g. "200,500,1000"), SIP_BENCH_REPEATS (3), SIP_BENCH_TRANSPORT.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from services.dialer.backend import CallPlan, CallReport
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.message import Address
from services.dialer.sip.ua import Route
from tests.sip.phones import free_phone_port, scenario, start_phone

A, B = "127.0.0.2", "127.0.0.3"
# New callbacks per second (the dialer's DIALER_SIP_CALLS_PER_SECOND); B talks long enough
# for every callback of the largest size to be up at once.
RATE = float(os.environ.get("SIP_BENCH_RATE", "250"))
RESULTS = Path(__file__).parent / "results"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_connected(reports: list[CallReport]) -> int:
    edges: list[tuple[datetime, int]] = []
    for report in reports:
        if report.connected_at is not None:
            edges += [(report.connected_at, 1), (report.ended, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += step
        peak = max(peak, current)
    return peak


async def one_run(size: int, transport: Literal["udp", "tcp"]) -> dict[str, Any]:
    port = free_phone_port(A, B)
    timeout = 120
    talk_ms = int(size / RATE * 1000) + 2000
    phone_a = await start_phone(
        A, scenario("answer", "a", ring_ms=0), calls=size, transport=transport, port=port,
        timeout_seconds=timeout,
    )  # fmt: skip
    phone_b = await start_phone(
        B, scenario("answer", "b", ring_ms=0, hangup="phone", talk_ms=talk_ms), calls=size,
        transport=transport, port=port, timeout_seconds=timeout,
    )  # fmt: skip
    routes = (Route("1*", Address(A, port), "bench"), Route("2*", Address(B, port), "bench"))
    backend = await SipBackend.open(
        transport=transport,
        listen="127.0.0.1:0",
        advertise="",
        routes=routes,
        accounts={},
        assert_identity=False,
        socket_buffer_bytes=4 * 1024 * 1024,
        ring_timeout_seconds=30,
        max_call_seconds=60,
        calls_per_second=RATE,
    )

    async def connected() -> None:
        return None

    plans = [
        CallPlan(call_uuid=str(i), a_numbers=(f"1{i:06d}",), b_number=f"2{i:06d}")
        for i in range(size)
    ]
    cpu_before, started = cpu_seconds(), time.perf_counter()
    reports = await asyncio.gather(*(backend.place_call(plan, connected) for plan in plans))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    statuses = [await phone_a.finished(), await phone_b.finished()]
    retransmissions = backend.ua.retransmissions + sum(
        t.retransmissions for t in backend.ua.transactions.values()
    )
    backend.close()
    ok = sum(
        1
        for report in reports
        if report.outcome == "connected" and all(leg.teardown_confirmed for leg in report.legs)
    )
    # Controller CPU, less the idle talk time's share (nothing runs while phones talk).
    return {
        "size": size,
        "connected_and_torn_down": ok,
        "lost": size - ok,
        "peak_connected": peak_connected(list(reports)),
        "cpu_ms_per_callback": round(cpu * 1000 / size, 3),
        "retransmissions": retransmissions,
        "phones_exit": statuses,
        "seconds": round(elapsed, 2),
    }


def spread(values: list[float]) -> str:
    return f"{min(values):g} / {statistics.median(values):g} / {max(values):g}"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout.split()
    version = next((word for word in sipp if word.startswith("v3")), "?")
    load = os.getloadavg()[0]
    python = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores, Python {python}, sipp {version}, load {load:.1f}"


async def main() -> None:
    sizes = [int(s) for s in os.environ.get("SIP_BENCH_SIZES", "200,500,1000").split(",")]
    repeats = int(os.environ.get("SIP_BENCH_REPEATS", "3"))
    transport = cast(Literal["udp", "tcp"], os.environ.get("SIP_BENCH_TRANSPORT", "udp"))
    runs = {size: [await one_run(size, transport) for _ in range(repeats)] for size in sizes}
    lines = [
        f"SIP callbacks at once over {transport.upper()} ({machine()}); min / median / max of "
        f"{repeats} runs",
        "",
        "| callbacks at once | connected + torn down | lost | peak connected "
        "| CPU ms / callback | retransmissions | phones exit 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, results in runs.items():
        column: dict[str, list[float]] = {
            key: [float(r[key]) for r in results]
            for key in ("connected_and_torn_down", "lost", "peak_connected",
                        "cpu_ms_per_callback", "retransmissions")
        }  # fmt: skip
        phones_ok = sum(r["phones_exit"] == [0, 0] for r in results)
        lines.append(
            f"| {size} | {spread(column['connected_and_torn_down'])} | {spread(column['lost'])} "
            f"| {spread(column['peak_connected'])} | {spread(column['cpu_ms_per_callback'])} "
            f"| {spread(column['retransmissions'])} | {phones_ok}/{len(results)} |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sip.md").write_text(table + "\n")
    (RESULTS / "sip.json").write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
