"""Simultaneous callbacks through the sip backend against sipp phones on loopback.

For each size N (default 200, 500, 1000): phone A (127.0.0.2) and phone B (127.0.0.3) take N
calls each; the controller (the same SipBackend the dialer runs) places N callbacks at once;
callbacks start at SIP_BENCH_RATE per second (250) and B talks until the last one has
been connected for 2 s, so all N are connected together. Reported per size, min/median/max
over repeats: callbacks connected with teardown confirmed, lost (anything else), the peak
of simultaneously connected callbacks, controller CPU per callback, SIP retransmissions,
and whether both phones' sipp exited 0.

A/B in one run: the absolute CPU figure moves threefold between machines of the same kind, so a
change is judged against a baseline measured beside it. Each repeat runs in a subprocess of its
own, once with the SIP code of the baseline git ref (a detached worktree in a temporary folder,
put first on PYTHONPATH) and once with this tree's, alternating which goes first; the table has
both rows and the change's CPU as a ratio of the baseline's, the median of the per-repeat ratios.
Everything else (this driver, the phones) is the same code for both.

`make bench-sip` runs it; results go to bench/results/sip.json and sip.md.
Environment: SIP_BENCH_SIZES (e.g. "200,500,1000"), SIP_BENCH_REPEATS (3), SIP_BENCH_TRANSPORT,
SIP_BENCH_BASELINE (a git ref; default the commit the CPU work of issue 22 started from; empty:
this tree only).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from services.dialer.backend import CallPlan, CallReport
from services.dialer.sip.backend import SipBackend
from services.dialer.sip.message import Address
from services.dialer.sip.transaction import ClientTransaction
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
        t.retransmissions
        for t in backend.ua.transactions.values()
        if isinstance(t, ClientTransaction)
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


# The commit before the CPU work of issue 22: what "today's" figure means.
DEFAULT_BASELINE = "93e8e06"
ROOT = Path(__file__).resolve().parent.parent


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


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """The tree of `ref` in a temporary detached worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sip-bench-") as parent:
        path = Path(parent) / "baseline"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", "-q", str(path), ref], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=True)


def run_in(code: Path, size: int, transport: str) -> dict[str, Any]:
    """One run in a fresh interpreter whose `services` (and phones) come from `code`.

    `-P` keeps this file's folder off sys.path and PYTHONPATH puts `code` ahead of the
    editable install, so only the SIP code differs between the A and B runs."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-P", str(Path(__file__).resolve()), "--one", str(size), transport]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench run in {code} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if Path(result.pop("code")) != code:
        raise RuntimeError(f"the run in {code} imported its SIP code from elsewhere")
    return result


def row(label: str, size: int, results: list[dict[str, Any]], ratio: str) -> str:
    column: dict[str, list[float]] = {
        key: [float(r[key]) for r in results]
        for key in ("connected_and_torn_down", "lost", "peak_connected",
                    "cpu_ms_per_callback", "retransmissions")
    }  # fmt: skip
    phones_ok = sum(r["phones_exit"] == [0, 0] for r in results)
    return (
        f"| {size} | {label} | {spread(column['connected_and_torn_down'])} "
        f"| {spread(column['lost'])} | {spread(column['peak_connected'])} "
        f"| {spread(column['cpu_ms_per_callback'])} | {ratio} "
        f"| {spread(column['retransmissions'])} | {phones_ok}/{len(results)} |"
    )


def main() -> None:
    sizes = [int(s) for s in os.environ.get("SIP_BENCH_SIZES", "200,500,1000").split(",")]
    repeats = int(os.environ.get("SIP_BENCH_REPEATS", "3"))
    transport = os.environ.get("SIP_BENCH_TRANSPORT", "udp")
    baseline = os.environ.get("SIP_BENCH_BASELINE", DEFAULT_BASELINE)
    label = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"], check=False)
    label += "+changes" if dirty.returncode else ""
    load_before = os.getloadavg()[0]
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    context: AbstractContextManager[Path | None] = checkout(baseline) if baseline else nullcontext()
    with context as base:
        codes = {label: ROOT} if base is None else {f"{baseline} (baseline)": base, label: ROOT}
        for size in sizes:
            runs[size] = {name: [] for name in codes}
            for repeat in range(repeats):
                # Alternate which side goes first: drift in the machine's load hits both.
                order = list(codes.items())
                for name, code in order if repeat % 2 == 0 else reversed(order):
                    runs[size][name].append(run_in(code, size, transport))
    lines = [
        f"SIP callbacks at once over {transport.upper()} ({machine()}, load at start "
        f"{load_before:.1f}); min / median / max of {repeats} runs; each run a fresh process, "
        f"the code under test alternating",
        "",
        "| callbacks at once | code | connected + torn down | lost | peak connected "
        "| CPU ms / callback | CPU vs baseline | retransmissions | phones exit 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, by_code in runs.items():
        names = list(by_code)
        for name in names:
            ratio = "1"
            if len(names) == 2 and name != names[0]:
                pairs = zip(by_code[names[0]], by_code[name], strict=True)
                ratios = [b["cpu_ms_per_callback"] / a["cpu_ms_per_callback"] for a, b in pairs]
                ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f} to {max(ratios):.2f})"
            lines.append(row(name, size, by_code[name], ratio if len(names) == 2 else "-"))
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sip.md").write_text(table + "\n")
    (RESULTS / "sip.json").write_text(json.dumps(runs, indent=2) + "\n")


def one(size: int, transport: str) -> None:
    """The child's side of run_in: one run, its result as one JSON line."""
    import services

    result = asyncio.run(one_run(size, cast(Literal["udp", "tcp"], transport)))
    result["code"] = str(Path(services.__file__).resolve().parent.parent)
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one(int(sys.argv[2]), sys.argv[3])
    else:
        main()
