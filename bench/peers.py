"""The same workloads as scheduled jobs in two PostgreSQL job queues, on the same server.

Setups (`SETUPS`, chosen by BENCH_PEERS):

- pgqueuer 1.6.0 on asyncpg, as its docs recommend (`PgQueuer.from_asyncpg_connection`):
  jobs enqueued with `execute_after`; 2 worker processes, batch 100
  (QueueManager.run(batch_size=100)); a worker wakes by NOTIFY and by a timer to the next
  deferred job. `pgqueuer` runs a no-op per job, `pgqueuer-calls` the database work of one of
  our callbacks (below).
- `pgqueuer-psycopg`: the same on a psycopg connection (`from_psycopg_connection`), which is
  not the recommended setup: kept to show what the driver costs.
- procrastinate 3.10.0 (its PsycopgConnector, the connector its docs use): jobs deferred with
  `schedule_at`; 2 worker processes with concurrency 30 each; a worker finds jobs that become
  due by its poll (5 s by default). `procrastinate` no-op, `procrastinate-calls` as below.

The `-calls` job does what our dialer writes per callback (services/dialer/repository.py,
records.py): it inserts the call's row into `bench_calls`, a table shaped like our `calls`
(same columns, indexes and fillfactor), then marks it ended with its result and record. Ours
batches these statements over many calls; the peers' job writes its own call, two statements,
on a pool of 10 connections per worker.

Every repeat of every workload starts clean: a fresh database on the same server with the
peer's schema just installed, fresh worker processes, nothing left from the repeat before; the
database is dropped afterwards. A repeat that does not finish in its time says so ("did not
finish: N of M jobs ran in T s"); it never becomes a number.

Each worker process writes one line per job it ran ("<run> <due> <picked> <done>", epochs) to a
file when it stops; the driver reads them for throughput and lateness.
`python -m bench.peers worker <setup> <dsn> <file>` is one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg

from bench.report import latency_summary

ENTRYPOINT = "noop"
WORKERS = 2
PGQUEUER_BATCH = 100
PROCRASTINATE_CONCURRENCY = 30
CALLS_POOL_SIZE = 10  # connections per worker for the -calls job's own writes


@dataclass(frozen=True)
class Setup:
    """One peer, set up one way: its queue, the driver it runs on and what a job does."""

    name: str
    queue: str  # "pgqueuer" | "procrastinate"
    driver: str  # "asyncpg" | "psycopg"
    job: str  # "noop" | "calls"
    recommended: bool = True  # the setup the peer's docs recommend

    def describe(self) -> str:
        workers = (
            f"{WORKERS} workers, batch {PGQUEUER_BATCH}"
            if self.queue == "pgqueuer"
            else f"{WORKERS} workers x {PROCRASTINATE_CONCURRENCY}"
        )
        setup = f"{self.driver}, {workers}"
        return setup if self.recommended else f"{setup}; not the recommended setup"


SETUPS = {
    s.name: s
    for s in (
        Setup("pgqueuer", "pgqueuer", "asyncpg", "noop"),
        Setup("pgqueuer-calls", "pgqueuer", "asyncpg", "calls"),
        Setup("pgqueuer-psycopg", "pgqueuer", "psycopg", "noop", recommended=False),
        Setup("procrastinate", "procrastinate", "psycopg", "noop"),
        Setup("procrastinate-calls", "procrastinate", "psycopg", "calls"),
    )
}
KINDS = tuple(SETUPS)


# -- the -calls job: the database work of one of our callbacks --------------------------------

# Our `calls` table (services/common/models.py, migrations 0001-0011), under another name.
CALLS_TABLE = """
CREATE TABLE bench_calls (
    call_uuid varchar(36) PRIMARY KEY,
    client_id varchar(128) NOT NULL,
    queue_id bigint NOT NULL,
    task_id bigint NOT NULL,
    attempt integer NOT NULL,
    backend varchar(32) NOT NULL,
    result varchar(16) NOT NULL DEFAULT 'in_progress',
    comment text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    connected_at timestamptz,
    task_deleted boolean NOT NULL DEFAULT false,
    record jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (task_id, attempt)
) WITH (fillfactor = 10);
CREATE INDEX ON bench_calls (queue_id, started_at) WHERE task_deleted;
CREATE INDEX ON bench_calls (client_id, started_at) WHERE task_deleted;
"""


def call_record(now: datetime) -> str:
    """A record like the simulated phones' (two legs answered at once), as JSON."""
    at = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def leg(role: str, number: str) -> dict[str, Any]:
        return {
            "role": role, "number": number, "result": "answered", "ring_started_utc": at,
            "answered_utc": at, "ended_utc": at, "ring_seconds": 0.0, "talk_seconds": 0.0,
            "hangup_by": "a", "sip_call_id": "", "final_response": "",
            "teardown_confirmed": False,
        }  # fmt: skip

    record = {
        "legs": [leg("a", "+15551230000"), leg("b", "+15551239999")],
        "duration_seconds": 0.0,
        "talk_seconds": 0.0,
    }
    return orjson.dumps(record).decode()


# The same two statements for both drivers, with their own placeholders (named: the end's
# come in the other order).
_INSERT_CALL = (
    "INSERT INTO bench_calls (call_uuid, client_id, queue_id, task_id, attempt, backend) "
    "VALUES ({call}, 'bench', 0, {job}, 1, 'simulated')"
)
_END_CALL = (
    "UPDATE bench_calls SET result = 'connected', comment = '', ended_at = now(), "
    "connected_at = COALESCE(connected_at, now()), record = CAST({record} AS jsonb) "
    "WHERE call_uuid = {call} AND result = 'in_progress'"
)

CallWriter = Callable[[int], Awaitable[None]]


@contextlib.asynccontextmanager
async def _call_writer(setup: Setup, dsn: str) -> Any:
    """Yields `write(job_id)`: insert the job's call, then mark it ended (two statements, as
    our dialer's start_calls and finish_calls, here one call at a time)."""
    if setup.driver == "asyncpg":
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=CALLS_POOL_SIZE)
        insert = _INSERT_CALL.format(call="$1", job="$2")
        end = _END_CALL.format(call="$1", record="$2")

        async def write_asyncpg(job_id: int) -> None:
            call = str(uuid.uuid4())
            await pool.execute(insert, call, job_id)
            await pool.execute(end, call, call_record(datetime.now(UTC)))

        try:
            yield write_asyncpg
        finally:
            await pool.close()
    else:
        from psycopg_pool import AsyncConnectionPool

        conns = AsyncConnectionPool(
            dsn, min_size=2, max_size=CALLS_POOL_SIZE, kwargs={"autocommit": True}, open=False
        )
        await conns.open()
        insert = _INSERT_CALL.format(call="%(call)s", job="%(job)s")
        end = _END_CALL.format(call="%(call)s", record="%(record)s")

        async def write_psycopg(job_id: int) -> None:
            call = str(uuid.uuid4())
            async with conns.connection() as conn:
                await conn.execute(insert, {"call": call, "job": job_id})
            async with conns.connection() as conn:
                record = call_record(datetime.now(UTC))
                await conn.execute(end, {"call": call, "record": record})

        try:
            yield write_psycopg
        finally:
            await conns.close()


# -- the workers (run in their own processes) -------------------------------------------------


async def _pgqueuer_worker(
    setup: Setup, dsn: str, write: CallWriter | None, lines: list[str], stop: asyncio.Event
) -> None:
    from pgqueuer import Job, PgQueuer

    if setup.driver == "asyncpg":
        import asyncpg

        manager = PgQueuer.from_asyncpg_connection(await asyncpg.connect(dsn))
    else:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        manager = PgQueuer.from_psycopg_connection(conn)

    @manager.entrypoint(ENTRYPOINT)  # type: ignore[untyped-decorator]
    async def job(job: Job) -> None:
        picked = time.time()
        if write is not None:
            await write(int(job.id))
        run = (job.payload or b"").decode()
        lines.append(f"{run} {job.execute_after.timestamp()} {picked} {time.time()}")

    async def stopper() -> None:
        await stop.wait()
        manager.shutdown.set()

    stopping = asyncio.create_task(stopper())
    await manager.run(batch_size=PGQUEUER_BATCH)
    stopping.cancel()


def procrastinate_app(dsn: str) -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))


async def _procrastinate_worker(
    setup: Setup, dsn: str, write: CallWriter | None, lines: list[str], stop: asyncio.Event
) -> None:
    app = procrastinate_app(dsn)

    @app.task(name=ENTRYPOINT, pass_context=True)  # type: ignore[untyped-decorator]
    async def job(context: Any, run: str) -> None:
        picked = time.time()
        if write is not None:
            await write(int(context.job.id))
        lines.append(f"{run} {context.job.scheduled_at.timestamp()} {picked} {time.time()}")

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


async def _worker(setup: Setup, dsn: str, out: Path) -> None:
    lines: list[str] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    run = _pgqueuer_worker if setup.queue == "pgqueuer" else _procrastinate_worker
    async with contextlib.AsyncExitStack() as stack:
        write = (
            await stack.enter_async_context(_call_writer(setup, dsn))
            if setup.job == "calls"
            else None
        )
        await run(setup, dsn, write, lines, stop)
    await asyncio.to_thread(out.write_text, "".join(line + "\n" for line in lines))


# -- the driver --------------------------------------------------------------------------------


def database_url(server_dsn: str, name: str) -> str:
    """The URL of database `name` on the server of `server_dsn` (a postgresql:// URL)."""
    return urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(server_dsn: str, name: str) -> Iterator[str]:
    """A new, empty database on the same server for one repeat; dropped afterwards (with any
    connection a worker left behind)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def install(setup: Setup, dsn: str) -> None:
    """Create the peer's tables (and bench_calls for a -calls job) in a new database."""
    if setup.queue == "pgqueuer":
        from pgqueuer import Queries

        async def run() -> None:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            await Queries.from_asyncpg_connection(conn).install()
            await conn.close()

        asyncio.run(run())
    else:
        app = procrastinate_app(dsn)
        with app.open():
            app.schema_manager.apply_schema()
    if setup.job == "calls":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(CALLS_TABLE)


@contextlib.contextmanager
def workers(setup: Setup, dsn: str, folder: Path) -> Iterator[list[Path]]:
    """WORKERS fresh worker processes of a setup; yields the files they write when stopped."""
    files = [folder / f"{setup.name}-{i}-{time.monotonic_ns()}.txt" for i in range(WORKERS)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.peers", "worker", setup.name, dsn, str(out)],
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


def results(files: list[Path], run: str) -> list[tuple[float, float, float]]:
    """(due, picked, done) epochs of the jobs of one run, from the stopped workers' files."""
    rows = []
    for path in files:
        for line in path.read_text().splitlines() if path.exists() else []:
            tag, due, picked, done = line.split()
            if tag == run:
                rows.append((float(due), float(picked), float(done)))
    return rows


async def _enqueue(setup: Setup, dsn: str, run: str, due: datetime, count: int) -> None:
    """count jobs of run `run`, due at `due`, in batches (each peer's own bulk API)."""
    if setup.queue == "pgqueuer":
        from pgqueuer import Queries

        if setup.driver == "asyncpg":
            import asyncpg

            conn: Any = await asyncpg.connect(dsn)
            queries = Queries.from_asyncpg_connection(conn)
        else:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            queries = Queries.from_psycopg_connection(conn)
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


def pending(setup: Setup, dsn: str) -> int:
    """Jobs due within a day not yet run (the stored future jobs are a year ahead)."""
    if setup.queue == "pgqueuer":
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


def wait_done(setup: Setup, dsn: str, until: float) -> int:
    """Waits until no job is pending or the monotonic time `until`; returns those left."""
    while (left := pending(setup, dsn)) > 0 and time.monotonic() < until:
        time.sleep(0.1)
    return left


def store_future_jobs(setup: Setup, dsn: str, count: int) -> None:
    """count jobs due in a year, written with one INSERT ... SELECT into the peer's table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if setup.queue == "pgqueuer":
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


@dataclass(frozen=True)
class Outcome:
    """One repeat of one workload: how many jobs were due, how many ran in the time allowed,
    and (due, picked, done) of those the workers reported."""

    expected: int
    left: int  # still pending when the time ran out (0: finished)
    allowed_s: float  # from the first due second to the deadline
    jobs: tuple[tuple[float, float, float], ...] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.left == 0 and len(self.jobs) == self.expected

    def unfinished(self) -> str:
        ran = self.expected - self.left
        text = f"did not finish: {ran:,} of {self.expected:,} jobs ran in {self.allowed_s:.0f} s"
        if self.left == 0:  # all ran, but a worker's file lacks some (it was killed)
            text = f"{len(self.jobs):,} of {self.expected:,} jobs reported by the workers"
        return text

    def throughput(self) -> float:
        """Jobs/s from the due second to the last job done (a finished burst)."""
        first_due = min(due for due, _, _ in self.jobs)
        return len(self.jobs) / (max(done for _, _, done in self.jobs) - first_due)

    def lateness(self) -> dict[str, float]:
        """p50/p99/max of picked - due, ms (a finished steady run)."""
        return latency_summary([(picked - due) * 1000 for due, picked, _ in self.jobs])


def _database_name(setup: Setup, workload: str, index: int) -> str:
    return f"bench_{setup.name.replace('-', '_')}_{workload}_{index}"


def burst(setup: Setup, server_dsn: str, index: int, count: int, timeout: float) -> Outcome:
    """count jobs due at the same whole second, written ahead by one INSERT ... SELECT, in a
    fresh database with fresh workers; `timeout` seconds from the due second to finish."""
    run = f"burst{index}"
    with fresh_database(server_dsn, _database_name(setup, "burst", index)) as dsn:
        install(setup, dsn)
        with tempfile_folder() as folder:
            with workers(setup, dsn, folder) as files:
                # Due 10 s ahead: one INSERT of 10,000 jobs into procrastinate_jobs (its
                # triggers) outlasted 3 s on the busy machine.
                due = (db_now(dsn) + timedelta(seconds=10)).replace(microsecond=0)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if setup.queue == "pgqueuer":
                        conn.execute(
                            "INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, "
                            "status) SELECT 0, %s, convert_to(%s, 'UTF8'), %s, 'queued' "
                            "FROM generate_series(1, %s)",
                            (ENTRYPOINT, run, due, count),
                        )
                    else:
                        conn.execute(
                            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, "
                            "scheduled_at) SELECT 'default', %s, "
                            "jsonb_build_object('run', %s::text), %s FROM generate_series(1, %s)",
                            (ENTRYPOINT, run, due, count),
                        )
                if datetime.now(UTC) > due:
                    raise RuntimeError(f"{setup.name}: writing {count} jobs outlasted their due")
                until = time.monotonic() + (due - datetime.now(UTC)).total_seconds() + timeout
                left = wait_done(setup, dsn, until)
            jobs = tuple(results(files, run))
    return Outcome(count, left, timeout, jobs)


def steady(
    setup: Setup, server_dsn: str, index: int, rate: int, seconds: int, future: int, grace: float
) -> Outcome:
    """rate jobs due each whole second for `seconds`, each second's jobs enqueued 2 s ahead
    (as for our system), with `future` jobs stored a year ahead, in a fresh database with
    fresh workers; `grace` seconds after the last due second to finish."""
    run = f"steady{index}"
    with fresh_database(server_dsn, _database_name(setup, "steady", index)) as dsn:
        install(setup, dsn)
        store_future_jobs(setup, dsn, future)
        with tempfile_folder() as folder:
            with workers(setup, dsn, folder) as files:
                first_due = (db_now(dsn) + timedelta(seconds=3)).replace(microsecond=0)
                for second in range(seconds):
                    due = first_due + timedelta(seconds=second)
                    wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
                    if wait > 0:
                        time.sleep(wait)
                    asyncio.run(_enqueue(setup, dsn, run, due, rate))
                last_due = first_due + timedelta(seconds=seconds - 1)
                until = time.monotonic() + (last_due - datetime.now(UTC)).total_seconds() + grace
                left = wait_done(setup, dsn, until)
            jobs = tuple(results(files, run))
    return Outcome(rate * seconds, left, seconds - 1 + grace, jobs)


@contextlib.contextmanager
def tempfile_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        yield Path(tmp)


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(dist)
    except PackageNotFoundError:  # a run without the bench extra (BENCH_PEERS=)
        return "not installed"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker" and sys.argv[2] in SETUPS:
        asyncio.run(_worker(SETUPS[sys.argv[2]], sys.argv[3], Path(sys.argv[4])))
    else:
        sys.exit(f"usage: python -m bench.peers worker <{'|'.join(SETUPS)}> <dsn> <file>")
