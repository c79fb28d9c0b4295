"""Dispatch benchmarks on the whole local system (PostgreSQL, NATS, api, dispatchers, dialers).

1. Throughput: 10,000 tasks due at once (a queue switched on), simulated phones that answer
   at once: tasks/s from due to dialed (calls.started_at), and to finished.
2. Lateness: a steady 200 tasks/s falling due (start_time_utc each whole second, as the API's
   second precision makes clients do) with 1,000,000 future tasks stored: dial time minus
   start_time_utc, p50/p99/max.

`make bench` runs it; results go to bench/results/dispatch.json.
Environment: DISPATCHERS, DIALERS (default 2 and 2), BENCH_FUTURE_TASKS, BENCH_SECONDS.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from deploy.local.stack import Stack
from tests.conftest import free_port_block, stack_settings

INSTANT_PHONES = json.dumps([{"pattern": "*", "ring_seconds": 0, "talk_seconds": 0}])
BURST = 10_000
RATE = 200


def client(stack: Stack) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token('bench')}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=120)


def new_queue(api: httpx.Client, status: str) -> int:
    body = {"status": status, "concurrent_task_limit": 10_000}
    return int(api.post("/client/bench/task_scheduler/", json=body).json()["id"])


def add_tasks(api: httpx.Client, queue: int, count: int, start: str | None = None) -> None:
    task: dict[str, Any] = {"a_number": "+15551230000", "b_number": "+15551239999"}
    if start:
        task["start_time_utc"] = start
    for offset in range(0, count, 1000):
        body = {"tasks": [task] * min(1000, count - offset)}
        api.post(f"/client/bench/task_scheduler/{queue}/tasks/", json=body).raise_for_status()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def throughput(stack: Stack, api: httpx.Client) -> dict[str, Any]:
    queue = new_queue(api, "off")
    add_tasks(api, queue, BURST)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        switched_on = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        api.put(f"/client/bench/task_scheduler/{queue}", json={"status": "on"}).raise_for_status()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            finished, last_dial, last_end = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'finished'), "
                "(SELECT max(started_at) FROM calls WHERE queue_id = %s), now() "
                "FROM tasks WHERE queue_id = %s",
                (queue, queue),
            ).fetchone()  # type: ignore[misc]
            if finished == BURST:
                break
            time.sleep(0.2)
    dial_seconds = (last_dial - switched_on).total_seconds()
    finish_seconds = (last_end - switched_on).total_seconds()
    return {
        "tasks": BURST,
        "due_to_dialed_tasks_per_second": round(BURST / dial_seconds),
        "due_to_finished_tasks_per_second": round(BURST / finish_seconds),
        "seconds_to_dial_all": round(dial_seconds, 2),
    }


def store_future_tasks(stack: Stack, api: httpx.Client, count: int) -> float:
    """1M tasks due in a year, written with one INSERT ... SELECT (the API would take minutes)."""
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
        conn.execute("ANALYZE tasks")
    return time.monotonic() - started


def lateness(stack: Stack, api: httpx.Client, seconds: int) -> dict[str, Any]:
    queue = new_queue(api, "on")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    first_due = (now + timedelta(seconds=3)).replace(microsecond=0)
    # Tasks are added 2 s ahead of their second, as a client scheduling "soon" would.
    for second in range(seconds):
        due = first_due + timedelta(seconds=second)
        wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        add_tasks(api, queue, RATE, due.strftime("%Y-%m-%d %H:%M:%S"))
    expected = RATE * seconds
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
    late = [float(r[0]) for r in rows]
    return {
        "tasks": len(late),
        "rate_per_second": RATE,
        "lateness_ms_p50": round(statistics.median(late), 1),
        "lateness_ms_p99": round(percentile(late, 0.99), 1),
        "lateness_ms_max": round(max(late), 1),
    }


def main() -> int:
    dispatchers = int(os.environ.get("DISPATCHERS", "2"))
    dialers = int(os.environ.get("DIALERS", "2"))
    future = int(os.environ.get("BENCH_FUTURE_TASKS", "1000000"))
    seconds = int(os.environ.get("BENCH_SECONDS", "30"))
    if seconds == 0:
        future = 0
    with tempfile.TemporaryDirectory() as tmp:
        settings = stack_settings(
            Path(tmp),
            dispatchers=dispatchers,
            dialers=dialers,
            dispatcher_grpc_port=free_port_block(),
            dialer_grpc_port=free_port_block(),
        )
        env = {"DIALER_SIMULATED_RULES": INSTANT_PHONES, "LOG_LEVEL": "WARNING"}
        env |= {f"{kind}_LOG_LEVEL": "WARNING" for kind in ("API", "DISPATCHER", "DIALER")}
        stack = Stack(settings, log_dir=Path(tmp) / "logs", service_env=env)
        stack.start()
        try:
            with client(stack) as api:
                results: dict[str, Any] = {"dispatchers": dispatchers, "dialers": dialers}
                results["burst"] = throughput(stack, api)
                print(json.dumps(results["burst"]), flush=True)
                if seconds:
                    results["future_tasks_stored"] = future
                    results["store_seconds"] = round(store_future_tasks(stack, api, future), 1)
                    results["steady"] = lateness(stack, api, seconds)
                    print(json.dumps(results["steady"]), flush=True)
        finally:
            stack.stop()
    out = Path(__file__).with_name("results") / f"dispatch-{dispatchers}x{dialers}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
