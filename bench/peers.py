"""The same workloads as no-op scheduled jobs in two PostgreSQL job queues, on the same server.

- pgqueuer 1.6.0: jobs enqueued with `execute_after`; 2 worker processes, batch 100
  (QueueManager.run(batch_size=100)); a worker wakes by NOTIFY and by a timer to the next
  deferred job.
- procrastinate 3.10.0: jobs deferred with `schedule_at`; 2 worker processes with
  concurrency 30 each; a worker finds jobs that become due by its poll (5 s by default).

Each worker process writes one line per job it ran ("<run> <due epoch> <picked epoch>") to
a file when it stops; the driver reads them for throughput and lateness.
`python -m bench.peers worker <pgqueuer|procrastinate> <dsn> <file>` is one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.report import latency_summary

ENTRYPOINT = "noop"
WORKERS = 2
PGQUEUER_BATCH = 100
PROCRASTINATE_CONCURRENCY = 30
KINDS = ("pgqueuer", "procrastinate")


# -- the workers (run in their own processes) -------------------------------------------------


async def _pgqueuer_worker(dsn: str, lines: list[str], stop: asyncio.Event) -> None:
    from pgqueuer import Job, PgQueuer

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    manager = PgQueuer.from_psycopg_connection(conn)

    @manager.entrypoint(ENTRYPOINT)  # type: ignore[untyped-decorator]
    async def noop(job: Job) -> None:
        run = (job.payload or b"").decode()
        lines.append(f"{run} {job.execute_after.timestamp()} {time.time()}")

    async def stopper() -> None:
        await stop.wait()
        manager.shutdown.set()

    stopping = asyncio.create_task(stopper())
    await manager.run(batch_size=PGQUEUER_BATCH)
    stopping.cancel()


def procrastinate_app(dsn: str) -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def _procrastinate_worker(dsn: str, lines: list[str], stop: asyncio.Event) -> None:
    app = procrastinate_app(dsn)

    @app.task(name=ENTRYPOINT, pass_context=True)  # type: ignore[untyped-decorator]
    async def noop(context: Any, run: str) -> None:
        lines.append(f"{run} {context.job.scheduled_at.timestamp()} {time.time()}")

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=PROCRASTINATE_CONCURRENCY, install_signal_handlers=False
            )
        )
        await stop.wait()
        worker.cancel()  # procrastinate stops gracefully on cancellation
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def _worker(kind: str, dsn: str, out: Path) -> None:
    lines: list[str] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    run = _pgqueuer_worker if kind == "pgqueuer" else _procrastinate_worker
    await run(dsn, lines, stop)
    await asyncio.to_thread(out.write_text, "".join(line + "\n" for line in lines))


# -- the driver --------------------------------------------------------------------------------


def install(kind: str, dsn: str) -> None:
    """Create the peer's tables in the database (once)."""
    if kind == "pgqueuer":
        from pgqueuer import PsycopgDriver, Queries

        async def run() -> None:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            queries = Queries(PsycopgDriver(conn))
            if not await queries.schema_is_installed():
                await queries.install()
            await conn.close()

        asyncio.run(run())
    else:
        app = procrastinate_app(dsn)
        with app.open():
            app.schema_manager.apply_schema()


@contextlib.contextmanager
def workers(kind: str, dsn: str, folder: Path) -> Iterator[list[Path]]:
    """WORKERS worker processes of a peer; yields the files they write when stopped."""
    files = [folder / f"{kind}-{i}-{time.monotonic_ns()}.txt" for i in range(WORKERS)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.peers", "worker", kind, dsn, str(out)],
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        for out in files
    ]
    time.sleep(2.0)  # imports and LISTEN
    try:
        yield files
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def results(files: list[Path], run: str) -> list[tuple[float, float]]:
    """(due, picked) epochs of the jobs of one run, from the stopped workers' files."""
    rows = []
    for path in files:
        for line in path.read_text().splitlines():
            tag, due, picked = line.split()
            if tag == run:
                rows.append((float(due), float(picked)))
    return rows


async def _enqueue(kind: str, dsn: str, run: str, due: datetime, count: int) -> None:
    """count jobs of run `run`, due at `due`, in batches (each peer's own bulk API)."""
    if kind == "pgqueuer":
        from pgqueuer import PsycopgDriver, Queries

        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        queries = Queries(PsycopgDriver(conn))
        for offset in range(0, count, 10_000):
            size = min(10_000, count - offset)
            after = due - datetime.now(UTC)
            await queries.enqueue(
                [ENTRYPOINT] * size, [run.encode()] * size, [0] * size, [after] * size
            )
        await conn.close()
    else:
        app = procrastinate_app(dsn)
        async with app.open_async():
            deferrer = app.configure_task(ENTRYPOINT, schedule_at=due)
            for offset in range(0, count, 10_000):
                size = min(10_000, count - offset)
                await deferrer.batch_defer_async(*[{"run": run}] * size)


def enqueue(kind: str, dsn: str, run: str, due: datetime, count: int) -> None:
    asyncio.run(_enqueue(kind, dsn, run, due, count))


def pending(kind: str, dsn: str) -> int:
    """Jobs due within a day not yet run (the stored future jobs are a year ahead)."""
    if kind == "pgqueuer":
        sql = (
            "SELECT count(*) FROM pgqueuer WHERE entrypoint = %s "
            "AND execute_after < now() + interval '1 day'"
        )
    else:
        sql = (
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s "
            "AND status IN ('todo', 'doing') "
            "AND coalesce(scheduled_at, now()) < now() + interval '1 day'"
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute(sql, (ENTRYPOINT,)).fetchone()[0])  # type: ignore[index]


def wait_done(kind: str, dsn: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := pending(kind, dsn)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{kind}: {left} jobs not run after {timeout} s")
        time.sleep(0.1)


def store_future_jobs(kind: str, dsn: str, count: int) -> None:
    """count jobs due in a year, written with one INSERT ... SELECT into the peer's table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if kind == "pgqueuer":
            conn.execute(
                "INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status) "
                "SELECT 0, %s, 'future'::bytea, "
                "now() + interval '365 days' + n * interval '1 second', 'queued' "
                "FROM generate_series(1, %s) AS n",
                (ENTRYPOINT, count),
            )
            conn.execute("VACUUM ANALYZE pgqueuer")
        else:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at) "
                "SELECT 'default', %s, '{\"run\": \"future\"}'::jsonb, "
                "now() + interval '365 days' + n * interval '1 second' "
                "FROM generate_series(1, %s) AS n",
                (ENTRYPOINT, count),
            )
            conn.execute("VACUUM ANALYZE procrastinate_jobs")


def db_now(dsn: str) -> datetime:
    with psycopg.connect(dsn, autocommit=True) as conn:
        now: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    return now


def burst_run(kind: str, dsn: str, run: str, count: int) -> Callable[[list[Path]], float]:
    """count jobs due at the same whole second, enqueued ahead; returns a reader of the
    throughput (jobs/s from the due second to the last job picked)."""
    # Written by one INSERT ... SELECT, due a few seconds ahead: the peers' bulk APIs
    # (batch_defer, enqueue) outlasted the due second on the busy machine.
    due = (db_now(dsn) + timedelta(seconds=3)).replace(microsecond=0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if kind == "pgqueuer":
            conn.execute(
                "INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status) "
                "SELECT 0, %s, convert_to(%s, 'UTF8'), %s, 'queued' FROM generate_series(1, %s)",
                (ENTRYPOINT, run, due, count),
            )
        else:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at) "
                "SELECT 'default', %s, jsonb_build_object('run', %s::text), %s "
                "FROM generate_series(1, %s)",
                (ENTRYPOINT, run, due, count),
            )
    if datetime.now(UTC) > due:
        raise RuntimeError(f"{kind}: enqueueing {count} jobs outlasted their due time")
    wait_done(kind, dsn, 900)

    def read(files: list[Path]) -> float:
        rows = results(files, run)
        first_due = min(d for d, _ in rows)
        return len(rows) / (max(p for _, p in rows) - first_due)

    return read


def steady_run(
    kind: str, dsn: str, run: str, rate: int, seconds: int
) -> Callable[[list[Path]], dict[str, float]]:
    """rate jobs due each whole second for `seconds`, each second's jobs enqueued 2 s ahead
    (as for our system); returns a reader of the lateness (picked - due) summary."""
    first_due = (db_now(dsn) + timedelta(seconds=3)).replace(microsecond=0)
    for second in range(seconds):
        due = first_due + timedelta(seconds=second)
        wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        enqueue(kind, dsn, run, due, rate)
    try:
        wait_done(kind, dsn, 60)
    except TimeoutError:
        pass  # the reader reports how many did not run

    def read(files: list[Path]) -> dict[str, float]:
        rows = results(files, run)
        if not rows:  # none ran within 60 s: count them as 60 s late (a lower bound)
            return {"p50_ms": 60_000.0, "p99_ms": 60_000.0, "max_ms": 60_000.0} | {
                "not_run": float(rate * seconds)
            }
        summary = latency_summary([(picked - due) * 1000 for due, picked in rows])
        # Jobs not run 60 s after the last one fell due: lateness above 60 s, not counted
        # in the percentiles above.
        return summary | {"not_run": float(rate * seconds - len(rows))}

    return read


def version(kind: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(kind)
    except PackageNotFoundError:  # a run without the bench extra (BENCH_PEERS=)
        return "not installed"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        asyncio.run(_worker(sys.argv[2], sys.argv[3], Path(sys.argv[4])))
    else:
        sys.exit("usage: python -m bench.peers worker <pgqueuer|procrastinate> <dsn> <file>")
