"""`make bench`: one run, one machine, one table.

Starts the whole system (as `make run` does), measures ingest, dispatch throughput, lateness,
scale and the claim step, runs the same workloads in pgqueuer and procrastinate on the same
PostgreSQL, profiles the api and the dispatcher with py-spy, and writes
bench/results/bench.md and bench/results/bench.json.

Sizes (environment; the defaults are the issue's):
  BENCH_REPEATS=3          repeats of every figure (min/median/max)
  BENCH_INGEST_TASKS=20000 tasks per bulk-ingest repeat (and per COPY repeat)
  BENCH_INGEST_CLIENTS=4   concurrent REST clients for bulk ingest
  BENCH_SINGLE_RATE=100    single-task POSTs per second, for BENCH_SINGLE_SECONDS=10
  BENCH_BURST=10000        tasks due at the same second
  BENCH_RATE=200           tasks due per second, for BENCH_SECONDS=60
  BENCH_FUTURE_TASKS=1000000  future tasks stored (lateness and scale)
  BENCH_CLAIM_TASKS=20000  tasks per claim-step repeat
  BENCH_PEERS=pgqueuer,pgqueuer-calls,pgqueuer-psycopg,procrastinate,procrastinate-calls
                           the peer setups (bench/peers.py SETUPS; empty: skip the peers)
  BENCH_PEER_TIMEOUT=300   seconds from the due second for a peer's burst to finish
  BENCH_OURS=1             0: skip our system's workloads (a peers-only run)
  BENCH_PROFILE=1          py-spy on the api and the dispatcher
  DISPATCHERS=2 DIALERS=2 APIS=2
  BENCH_OUT=bench/results  where bench.md and bench.json go (another folder for trial runs)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from bench import claim, ours, peers
from bench.report import Row, Target, machine, markdown
from deploy.local.stack import BIN, Stack

RESULTS = Path(os.environ.get("BENCH_OUT", Path(__file__).with_name("results")))
T = TypeVar("T")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def repeat(times: int, what: str, measure: Callable[[], T]) -> list[T]:
    values = []
    for i in range(times):
        value = measure()
        log(f"{what} #{i + 1}: {value}")
        values.append(value)
    return values


def versions(stack: Stack) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        pg = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    envoy = first_line([str(BIN / "envoy"), "--version"]).split("version: ")[-1]
    return {
        "Python": platform.python_version(),
        "PostgreSQL": pg,
        "NATS": first_line([str(BIN / "nats-server"), "--version"]).split()[-1],
        "Envoy": envoy.split("/")[1] if "/" in envoy else envoy,
        "pgqueuer": peers.version("pgqueuer"),
        "asyncpg": peers.version("asyncpg"),
        "procrastinate": peers.version("procrastinate"),
    }


# Frames on every stack (the event loop, the module runner): no information in their share.
_PLUMBING = ("asyncio/", "<frozen runpy>", "__main__.py", "(<string>", "grpcserver.py")


class Profiler:
    """py-spy record on one process while a workload runs; keeps the top functions."""

    def __init__(self, pid: int, name: str, seconds: int) -> None:
        self.name = name
        self.raw = Path(tempfile.mkdtemp()) / f"{name}.txt"
        self.process = subprocess.Popen(
            [
                str(BIN / "py-spy"),
                *("record", "--pid", str(pid), "--format", "raw", "--nonblocking"),
                *("--rate", "100", "--duration", str(seconds), "-o", str(self.raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def top(self, how_many: int = 12) -> dict[str, Any]:
        """Share of samples per leaf function (self time) and per function anywhere on the
        stack (total time), for the busiest."""
        self.process.wait()
        leaf: Counter[str] = Counter()
        total: Counter[str] = Counter()
        samples = 0
        for line in self.raw.read_text().splitlines() if self.raw.exists() else []:
            stack, _, count = line.rpartition(" ")
            frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")]
            n = int(count)
            samples += n
            leaf[frames[-1]] += n
            for frame in set(frames):
                if not any(part in frame for part in _PLUMBING):
                    total[frame] += n
        share = 100.0 / max(samples, 1)
        return {
            "samples": samples,
            "self_percent": {f: round(n * share, 1) for f, n in leaf.most_common(how_many)},
            "total_percent": {f: round(n * share, 1) for f, n in total.most_common(how_many)},
        }


def measure_ours(stack: Stack, repeats: int, rows: list[Row], out: dict[str, Any]) -> None:
    n_ingest = env_int("BENCH_INGEST_TASKS", 20_000)
    clients = env_int("BENCH_INGEST_CLIENTS", 4)
    rate, seconds = env_int("BENCH_SINGLE_RATE", 100), env_int("BENCH_SINGLE_SECONDS", 10)
    n_burst = env_int("BENCH_BURST", 10_000)
    steady_rate, steady_seconds = env_int("BENCH_RATE", 200), env_int("BENCH_SECONDS", 60)
    future = env_int("BENCH_FUTURE_TASKS", 1_000_000)
    profile = env_int("BENCH_PROFILE", 1) == 1
    with ours.client(stack) as api:
        bulk = repeat(
            repeats, "ingest REST", lambda: ours.bulk_ingest(stack, api, n_ingest, clients)
        )
        copy = repeat(repeats, "ingest COPY", lambda: ours.copy_ingest(stack, api, n_ingest))
        single = repeat(
            repeats, "single POSTs", lambda: ours.single_post_latency(stack, rate, seconds)
        )
        if profile:
            spy = Profiler(stack.pid("api"), "api", 15)
            ours.bulk_ingest(stack, api, n_ingest, clients)
            out["profile_api_bulk_ingest"] = spy.top()
        small = ours.stored_tasks(stack)
        burst = repeat(repeats, "burst", lambda: ours.burst(stack, api, n_burst))
        if profile:
            spies = [
                Profiler(stack.pid("dispatcher-0"), "dispatcher", 20),
                Profiler(stack.pid("dialer-0"), "dialer", 20),
            ]
            ours.burst(stack, api, n_burst)
            for spy in spies:
                out[f"profile_{spy.name}_burst"] = spy.top()
        out["future_store_seconds"] = round(ours.store_future_tasks(stack, api, future), 1)
        large = ours.stored_tasks(stack)
        burst_large = repeat(repeats, "burst, large", lambda: ours.burst(stack, api, n_burst))
        late = repeat(
            repeats, "lateness", lambda: ours.lateness(stack, api, steady_rate, steady_seconds)
        )
    out["stored_tasks_small"], out["stored_tasks_large"] = small, large
    s = "ours: ingest"
    rows += [
        Row(s, f"REST bulk, 1,000/request, {clients} clients", "tasks/s",
            tuple(bulk), Target(10_000, True)),
        Row(s, "COPY into tasks (database limit)", "rows/s", tuple(copy)),
        Row(s, "REST bulk as share of COPY", "%",
            tuple(100 * b / c for b, c in zip(bulk, copy, strict=True))),
        Row(s, f"single-task POST p50 at {rate}/s", "ms", tuple(x["p50_ms"] for x in single)),
        Row(s, f"single-task POST p99 at {rate}/s", "ms", tuple(x["p99_ms"] for x in single)),
    ]  # fmt: skip
    s = f"ours: {n_burst:,} due at once"
    rows += [
        Row(s, "due → dialed", "tasks/s", tuple(b["due_to_dialed_per_s"] for b in burst),
            Target(5_000, True), f"{small:,} stored"),
        Row(s, "due → finished", "tasks/s", tuple(b["due_to_finished_per_s"] for b in burst),
            None, f"{small:,} stored"),
        Row(s, "due → dialed", "tasks/s",
            tuple(b["due_to_dialed_per_s"] for b in burst_large), Target(5_000, True),
            f"{large:,} stored"),
        Row(s, "due → finished", "tasks/s",
            tuple(b["due_to_finished_per_s"] for b in burst_large), None, f"{large:,} stored"),
    ]  # fmt: skip
    s = f"ours: {steady_rate}/s for {steady_seconds} s, {large:,} stored"
    rows += [
        Row(s, "lateness p50", "ms", tuple(x["p50_ms"] for x in late), Target(10, False)),
        Row(s, "lateness p99", "ms", tuple(x["p99_ms"] for x in late), Target(50, False)),
        Row(s, "lateness max", "ms", tuple(x["max_ms"] for x in late), Target(250, False)),
    ]  # fmt: skip


def _peer_outcome(kind: str, measure: Callable[[], peers.Outcome]) -> peers.Outcome | str:
    """One peer repeat, or why it failed (one failure must not lose the rest of the run)."""
    try:
        return measure()
    except Exception as error:
        log(f"{kind} failed: {error!r}")
        return f"failed: {error!r}"


def _said(outcome: peers.Outcome | str) -> str:
    if isinstance(outcome, str):
        return outcome
    if not outcome.finished:
        return outcome.unfinished()
    return f"{outcome.throughput():.0f} jobs/s, lateness {outcome.lateness()}"


def _not_finished(outcomes: list[peers.Outcome | str]) -> tuple[str, ...]:
    return tuple(
        o if isinstance(o, str) else o.unfinished()
        for o in outcomes
        if isinstance(o, str) or not o.finished
    )


def compare_with_peers(
    stack: Stack, kinds: list[str], repeats: int, rows: list[Row], out: dict[str, Any]
) -> None:
    """Ours and each peer setup side by side, in rounds: round i runs our repeat i, then each
    peer's repeat i, back to back, so that a ratio is taken within a pair (this machine is
    shared, and its load moves within minutes). Every peer repeat runs in a fresh database
    with fresh workers (bench/peers.py); one that runs out of time is reported as such."""
    setups = [peers.SETUPS[kind] for kind in kinds]
    dsn = stack.database_url
    n_burst = env_int("BENCH_BURST", 10_000)
    rate, seconds = env_int("BENCH_RATE", 200), env_int("BENCH_SECONDS", 60)
    future = env_int("BENCH_FUTURE_TASKS", 1_000_000)
    burst_timeout = env_int("BENCH_PEER_TIMEOUT", 300)
    grace = 60  # seconds after the last due second for a steady run's jobs to run
    mine_burst: list[dict[str, float]] = []
    mine_late: list[dict[str, float]] = []
    bursts: dict[str, list[peers.Outcome | str]] = {kind: [] for kind in kinds}
    steadies: dict[str, list[peers.Outcome | str]] = {kind: [] for kind in kinds}
    with ours.client(stack) as api:
        stored = ours.stored_tasks(stack)
        for i in range(repeats):
            mine_burst.append(ours.burst(stack, api, n_burst))
            log(f"round {i + 1}, ours burst: {mine_burst[-1]}")
            for setup in setups:
                bursts[setup.name].append(
                    _peer_outcome(
                        setup.name, partial(peers.burst, setup, dsn, i, n_burst, burst_timeout)
                    )
                )
                log(f"round {i + 1}, {setup.name} burst: {_said(bursts[setup.name][-1])}")
        if ours.stored_tasks(stack) < future:  # measure_ours stored them if it ran
            ours.store_future_tasks(stack, api, future)
        stored_late = ours.stored_tasks(stack)
        for i in range(repeats):
            mine_late.append(ours.lateness(stack, api, rate, seconds))
            log(f"round {i + 1}, ours lateness: {mine_late[-1]}")
            for setup in setups:
                steadies[setup.name].append(
                    _peer_outcome(
                        setup.name,
                        partial(peers.steady, setup, dsn, i, rate, seconds, future, grace),
                    )
                )
                log(f"round {i + 1}, {setup.name} steady: {_said(steadies[setup.name][-1])}")
    out["peer_outcomes"] = {
        kind: {
            "burst": [_outcome_json(o) for o in bursts[kind]],
            "steady": [_outcome_json(o) for o in steadies[kind]],
        }
        for kind in kinds
    }
    finished = [b["due_to_finished_per_s"] for b in mine_burst]
    s = f"side by side: {n_burst:,} due at once"
    rows += [
        Row(s, "ours: due → finished (claim, dial, call row written and ended, task ended)",
            "tasks/s", tuple(finished), None, f"{stored:,} stored before"),
        Row(s, "ours: due → dialed", "tasks/s",
            tuple(b["due_to_dialed_per_s"] for b in mine_burst)),
    ]  # fmt: skip
    for setup in setups:
        outcomes = bursts[setup.name]
        work = "job writes a call row, then ends it" if setup.job == "calls" else "no-op"
        done = [o for o in outcomes if isinstance(o, peers.Outcome) and o.finished]
        rows.append(
            Row(s, f"{setup.name}: due → job done ({work})", "jobs/s",
                tuple(o.throughput() for o in done), None, setup.describe(),
                _not_finished(outcomes))
        )  # fmt: skip
        pairs = [
            mine / o.throughput()
            for mine, o in zip(finished, outcomes, strict=True)
            if isinstance(o, peers.Outcome) and o.finished
        ]
        rows.append(
            Row(s, f"ours due → finished / {setup.name}, paired rounds", "ratio", tuple(pairs),
                unfinished=_not_finished(outcomes))
        )  # fmt: skip
    s = f"side by side: {rate}/s for {seconds} s"
    for figure in ("p50", "p99", "max"):
        rows.append(
            Row(s, f"ours: lateness {figure} (dial - due)", "ms",
                tuple(x[f"{figure}_ms"] for x in mine_late), None, f"{stored_late:,} stored")
        )  # fmt: skip
        for setup in setups:
            outcomes = steadies[setup.name]
            late = [o for o in outcomes if isinstance(o, peers.Outcome) and o.finished]
            rows.append(
                Row(s, f"{setup.name}: lateness {figure} (job start - due)", "ms",
                    tuple(o.lateness()[f"{figure}_ms"] for o in late), None,
                    f"{future:,} stored", _not_finished(outcomes))
            )  # fmt: skip


def _outcome_json(outcome: peers.Outcome | str) -> dict[str, Any]:
    if isinstance(outcome, str):
        return {"failed": outcome}
    summary: dict[str, Any] = {
        "expected": outcome.expected,
        "left": outcome.left,
        "allowed_s": outcome.allowed_s,
        "finished": outcome.finished,
    }
    if outcome.finished:
        summary |= {"jobs_per_s": round(outcome.throughput(), 1)} | outcome.lateness()
    else:
        summary["unfinished"] = outcome.unfinished()
    return summary


def measure_claims(stack: Stack, repeats: int, rows: list[Row], with_pgqueuer: bool) -> None:
    """The claim step at equal batch sizes; ours and pgqueuer's repeat i run back to back
    (who goes first alternates), and the ratio is taken per pair."""
    count = env_int("BENCH_CLAIM_TASKS", 20_000)
    for index in range(stack.settings.dispatchers):
        stack.stop_child(f"dispatcher-{index}")  # they would claim the same tasks
    dsn = stack.database_url
    s = "claim step alone, same database"
    for batch in claim.BATCHES:
        mine: list[float] = []
        theirs: list[float] = []
        for i in range(repeats):
            ours_first = i % 2 == 0 or not with_pgqueuer
            if ours_first:
                mine.append(claim.ours(dsn, count, batch))
            if with_pgqueuer:
                theirs.append(claim.pgqueuer(dsn, count, batch))
            if not ours_first:
                mine.append(claim.ours(dsn, count, batch))
            log(f"claim {batch} #{i + 1}: ours {mine[-1]:.0f}" + (
                f", pgqueuer {theirs[-1]:.0f}, ratio {mine[-1] / theirs[-1]:.2f}"
                if with_pgqueuer else ""
            ))  # fmt: skip
        dispatcher = " (the dispatcher's batch)" if batch == claim.CLAIM_BATCH else ""
        rows.append(
            Row(s, f"ours: lock queue + count in flight + claim {batch:,} + mark done"
                f"{dispatcher}", "tasks/s", tuple(mine))
        )  # fmt: skip
        if with_pgqueuer:
            rows += [
                Row(s, f"pgqueuer (asyncpg): dequeue {batch:,} + log done", "jobs/s",
                    tuple(theirs)),
                Row(s, f"ours / pgqueuer, batch {batch:,}, paired repeats", "ratio",
                    tuple(a / b for a, b in zip(mine, theirs, strict=True)),
                    Target(1.0, True)),
            ]  # fmt: skip


def main() -> int:
    repeats = env_int("BENCH_REPEATS", 3)
    kinds = [k for k in os.environ.get("BENCH_PEERS", ",".join(peers.KINDS)).split(",") if k]
    dispatchers, dialers = env_int("DISPATCHERS", 2), env_int("DIALERS", 2)
    apis = env_int("APIS", 2)
    context: dict[str, Any] = machine()
    context["load_before"] = context.pop("load_average")
    context["started"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    context["sizes"] = {
        name: os.environ.get(name, default)
        for name, default in [
            ("BENCH_REPEATS", "3"), ("BENCH_INGEST_TASKS", "20000"),
            ("BENCH_INGEST_CLIENTS", "4"), ("BENCH_SINGLE_RATE", "100"),
            ("BENCH_SINGLE_SECONDS", "10"), ("BENCH_BURST", "10000"), ("BENCH_RATE", "200"),
            ("BENCH_SECONDS", "60"), ("BENCH_FUTURE_TASKS", "1000000"),
            ("BENCH_CLAIM_TASKS", "20000"), ("DISPATCHERS", "2"), ("DIALERS", "2"),
            ("APIS", "2"), ("BENCH_OURS", "1"), ("BENCH_PROFILE", "1"),
            ("BENCH_PEERS", ",".join(peers.KINDS)), ("BENCH_PEER_TIMEOUT", "300"),
        ]
    }  # fmt: skip
    started = time.monotonic()
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    with ours.running_stack(dispatchers, dialers, apis) as stack:
        found = versions(stack)
        log(f"stack up; {found}")
        if env_int("BENCH_OURS", 1):
            measure_ours(stack, repeats, rows, extra)
        save(rows, context, found, extra)
        if kinds:
            compare_with_peers(stack, kinds, repeats, rows, extra)
            save(rows, context, found, extra)
        if env_int("BENCH_CLAIM_TASKS", 20_000):
            measure_claims(stack, repeats, rows, any(k.startswith("pgqueuer") for k in kinds))
    context["load_after"] = [round(x, 2) for x in os.getloadavg()]
    context["minutes"] = round((time.monotonic() - started) / 60, 1)
    print(save(rows, context, found, extra))
    return 0


def save(
    rows: list[Row], context: dict[str, Any], found: dict[str, str], extra: dict[str, Any]
) -> str:
    """Write bench.md and bench.json with the rows so far (a run that fails later keeps them)."""
    context = {"load_after": ["-"], "minutes": "-"} | context
    repeats = env_int("BENCH_REPEATS", 3)
    table = markdown(rows, context, found, repeats)

    profiles = {k: v for k, v in extra.items() if k.startswith("profile_")}
    for name, profile in profiles.items():
        table += f"\npy-spy, {name.removeprefix('profile_')} ({profile['samples']} samples), "
        table += "busiest functions, % of samples on the stack:\n\n"
        table += "".join(f"- {pct}% {fn}\n" for fn, pct in profile["total_percent"].items())
        table += "\nself time:\n\n"
        table += "".join(f"- {pct}% {fn}\n" for fn, pct in profile["self_percent"].items())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.md").write_text(table)
    document = {
        "context": context,
        "versions": found,
        "rows": [
            {
                "workload": r.section,
                "figure": r.name,
                "note": r.note,
                "unit": r.unit,
                "values": [round(v, 2) for v in r.values],
                "did_not_finish": list(r.unfinished),
                "target": None if r.target is None else str(r.target),
            }
            for r in rows
        ],
        **extra,
    }
    (RESULTS / "bench.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return table


if __name__ == "__main__":
    sys.exit(main())
