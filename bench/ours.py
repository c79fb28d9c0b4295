"""Our system's workloads, on the whole local stack (PostgreSQL, NATS, api, Envoy, dispatchers,
dialers with simulated phones that answer at once).

- ingest: tasks/s through Envoy REST in bulk requests of 1,000; p50/p99 of single-task POSTs
  sent at a fixed rate; raw COPY of the same rows into the same table (the database's limit).
- burst: N tasks due at the same second (a queue switched on): tasks/s due -> dialed, -> finished.
- store_future_tasks: many tasks due in a year, written with one INSERT ... SELECT.
- lateness: a steady rate of tasks falling due: dial time minus start_time_utc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.report import latency_summary
from deploy.local.stack import Stack
from tests.support.stacks import stack_settings

INSTANT_PHONES = json.dumps([{"pattern": "*", "ring_seconds": 0, "talk_seconds": 0}])
CLIENT = "bench"
TASK: dict[str, Any] = {
    "a_number": "+15551230000",
    "b_number": "+15551239999",
    "try_count": 3,
    "callback_params": {"caller_id_name": "Bench", "caller_id_number": "+15550000000"},
}


BENCH_TENANT = (
    *("set", CLIENT, "--caller-id", "+15550000000"),
    *("--max-in-progress", "1000000", "--calls-per-second", "1000000"),
    *("--max-stored-tasks", "100000000"),
)


@contextlib.contextmanager
def running_stack(
    dispatchers: int, dialers: int, apis: int = 1, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The whole system as `make run` starts it, in a temporary folder, logs at WARNING;
    `env`: more settings for the services (another backend, another lookahead)."""
    with tempfile.TemporaryDirectory(prefix="callback-scheduler-bench-") as tmp:
        Path(tmp).chmod(0o755)  # the embedded PostgreSQL runs as another user
        settings = stack_settings(Path(tmp), dispatchers=dispatchers, dialers=dialers, apis=apis)
        extra = env or {}
        env = {"DIALER_SIMULATED_RULES": INSTANT_PHONES, "LOG_LEVEL": "WARNING"}
        env |= {f"{kind}_LOG_LEVEL": "WARNING" for kind in ("API", "DISPATCHER", "DIALER")}
        env |= extra
        stack = Stack(settings, log_dir=Path(tmp) / "logs", service_env=env)
        stack.start()
        try:
            # The bench's tenant is a big customer: room for its bursts and stored tasks.
            stack.admin(*BENCH_TENANT)
            yield stack
        finally:
            stack.stop()


def client(stack: Stack) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(CLIENT)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=120)


def new_queue(api: httpx.Client, status: str, limit: int = 10_000) -> int:
    body = {"status": status, "concurrent_task_limit": limit}
    reply = api.post(f"/client/{CLIENT}/task_scheduler/", json=body)
    reply.raise_for_status()
    return int(reply.json()["id"])


def add_tasks(api: httpx.Client, queue: int, count: int, start: str | None = None) -> None:
    """count tasks through the REST API, 1,000 per request."""
    task = dict(TASK, start_time_utc=start) if start else TASK
    for offset in range(0, count, 1000):
        body = {"tasks": [task] * min(1000, count - offset)}
        api.post(f"/client/{CLIENT}/task_scheduler/{queue}/tasks/", json=body).raise_for_status()


def bulk_ingest(stack: Stack, api: httpx.Client, count: int, clients: int) -> float:
    """Tasks/s through Envoy in bulk requests of 1,000, from `clients` concurrent clients."""
    queue = new_queue(api, "off")
    share = count // clients
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(add_tasks, api, queue, share) for _ in range(clients)]:
            future.result()
    return share * clients / (time.perf_counter() - started)


async def _single_posts(stack: Stack, rate: int, seconds: float) -> list[float]:
    headers = {"Authorization": f"Bearer {stack.token(CLIENT)}"}
    async with httpx.AsyncClient(base_url=stack.rest_url, headers=headers, timeout=60) as api:
        body = {"status": "off", "concurrent_task_limit": 1}
        queue = (await api.post(f"/client/{CLIENT}/task_scheduler/", json=body)).json()["id"]
        url = f"/client/{CLIENT}/task_scheduler/{queue}/tasks/"
        latencies: list[float] = []

        async def post(planned: float) -> None:
            reply = await api.post(url, json={"tasks": [TASK]})
            reply.raise_for_status()
            # From the planned send time: a slow server cannot hide its queueing delay
            # (no coordinated omission).
            latencies.append((time.perf_counter() - planned) * 1000)

        start = time.perf_counter() + 0.1
        sends = []
        for i in range(int(rate * seconds)):
            planned = start + i / rate
            await asyncio.sleep(max(0.0, planned - time.perf_counter()))
            sends.append(asyncio.create_task(post(planned)))
        await asyncio.gather(*sends)
    return latencies


def single_post_latency(stack: Stack, rate: int, seconds: float) -> dict[str, float]:
    """p50/p99/max of one-task POSTs sent at a fixed rate (open loop)."""
    return latency_summary(asyncio.run(_single_posts(stack, rate, seconds)))


COPY_COLUMNS = (
    "queue_id, client_id, name, a_number, b_number, extension_id, try_count, try_again_pause, "
    "url_before, url_before_again, url_success, url_after, start_time_utc, next_run_at, "
    "callback_params"
)


def copy_ingest(stack: Stack, api: httpx.Client, count: int) -> float:
    """Rows/s of COPY of the same rows into the same tasks table: the database's own limit."""
    queue = new_queue(api, "off")
    params = json.dumps(TASK["callback_params"])
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        row = (queue, CLIENT, "", TASK["a_number"], TASK["b_number"], 0, 3, 60, "", "", "", "")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY tasks ({COPY_COLUMNS}) FROM STDIN") as copy:
            for _ in range(count):
                copy.write_row((*row, now, now, params))
        return count / (time.perf_counter() - started)


def burst(stack: Stack, api: httpx.Client, count: int) -> dict[str, float]:
    """count tasks due at once (their queue switched on): tasks/s due -> dialed, -> finished."""
    queue = new_queue(api, "off")
    add_tasks(api, queue, count)
    # No prepared statements: from its sixth poll, a prepared probe ran PostgreSQL's generic
    # plan, which guesses that any queue holds half the tasks and scans the table: 0.85-2.7 s
    # a poll with 5M other tasks stored, competing with the burst it measures.
    with psycopg.connect(stack.database_url, autocommit=True, prepare_threshold=None) as conn:
        switched_on = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        api.put(
            f"/client/{CLIENT}/task_scheduler/{queue}", json={"status": "on"}
        ).raise_for_status()
        deadline = time.monotonic() + 900
        # An index probe, not a count: polled every 0.1 s, a count over the queue and a
        # max() over calls took a sixth of the database's time during the burst.
        while conn.execute(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE queue_id = %s "
            "AND status IN ('scheduled', 'delayed', 'executed'))",
            (queue,),
        ).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise TimeoutError("tasks of the burst not finished after 900 s")
            time.sleep(0.1)
        last_end = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        last_dial = conn.execute(
            "SELECT max(started_at) FROM calls WHERE queue_id = %s",
            (queue,),
        ).fetchone()[0]  # type: ignore[index]
    return {
        "due_to_dialed_per_s": count / (last_dial - switched_on).total_seconds(),
        "due_to_finished_per_s": count / (last_end - switched_on).total_seconds(),
    }


def stored_tasks(stack: Stack) -> int:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])  # type: ignore[index]


def store_future_tasks(stack: Stack, api: httpx.Client, count: int) -> float:
    """count tasks due in a year, written with one INSERT ... SELECT (the API would take
    minutes); seconds taken."""
    queue = new_queue(api, "on")
    started = time.monotonic()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                               try_count, try_again_pause, url_before, url_before_again,
                               url_success, url_after, start_time_utc, next_run_at,
                               callback_params)
            SELECT %s, 'bench', '', '+15550000000', '+15550000001', 0, 1, 60, '', '', '', '',
                   now() + interval '365 days' + n * interval '1 second',
                   now() + interval '365 days' + n * interval '1 second', '{}'::jsonb
            FROM generate_series(1, %s) AS n
            """,
            (queue, count),
        )
        conn.execute("VACUUM ANALYZE tasks")
    return time.monotonic() - started


def lateness(stack: Stack, api: httpx.Client, rate: int, seconds: int) -> dict[str, float]:
    """rate tasks due each whole second for `seconds`: dial time minus start_time_utc (ms)."""
    queue = new_queue(api, "on")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    first_due = (now + timedelta(seconds=3)).replace(microsecond=0)
    # Tasks are added 2 s ahead of their second, as a client scheduling "soon" would
    # (the API's start times have whole seconds).
    for second in range(seconds):
        due = first_due + timedelta(seconds=second)
        wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        add_tasks(api, queue, rate, due.strftime("%Y-%m-%d %H:%M:%S"))
    expected = rate * seconds
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            dialed = conn.execute(
                "SELECT count(*) FROM calls WHERE queue_id = %s", (queue,)
            ).fetchone()[0]  # type: ignore[index]
            if dialed == expected:
                break
            time.sleep(0.2)
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM c.started_at - t.start_time_utc) * 1000 "
            "FROM calls c JOIN tasks t ON t.id = c.task_id WHERE c.queue_id = %s",
            (queue,),
        ).fetchall()
    if len(rows) < expected:
        raise TimeoutError(f"{len(rows)} of {expected} tasks dialed")
    return latency_summary([float(r[0]) for r in rows])
