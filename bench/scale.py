"""`make bench-scale`: dispatch throughput with few vs many stored tasks (10 M by default).

The same 10,000-task burst as `make bench` (due -> dialed, due -> finished), first on an
almost empty database, then after BENCH_SCALE_TASKS future tasks (due in a year, on a
switched-on queue) are stored. Prints a Markdown table and writes bench/results/scale.md.

  BENCH_SCALE_TASKS=10000000  future tasks stored (written 1,000,000 per INSERT)
  BENCH_BURST=10000  BENCH_REPEATS=3  DISPATCHERS=2  DIALERS=2  APIS=2
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psycopg

from bench import ours
from bench.run import env_int, log, repeat
from deploy.local.stack import Stack

CHUNK = 1_000_000
RESULTS = Path(__file__).parent / "results"


def store(stack: Stack, count: int) -> float:
    """count tasks due in a year on one switched-on queue; seconds taken (with VACUUM)."""
    started = time.monotonic()
    with ours.client(stack) as api:
        queue = ours.new_queue(api, "on")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for offset in range(0, count, CHUNK):
            conn.execute(
                """
                INSERT INTO tasks (queue_id, client_id, name, a_number, b_number, extension_id,
                                   try_count, try_again_pause, url_before, url_before_again,
                                   url_success, url_after, start_time_utc, next_run_at,
                                   callback_params)
                SELECT %s, 'bench', '', '+15550000000', '+15550000001', 0, 1, 60, '', '', '',
                       '', now() + interval '365 days' + n * interval '1 second',
                       now() + interval '365 days' + n * interval '1 second', '{}'::jsonb
                FROM generate_series(%s, %s) AS n
                """,
                (queue, offset + 1, min(offset + CHUNK, count)),
            )
            log(f"stored {min(offset + CHUNK, count):,}")
        conn.execute("VACUUM ANALYZE tasks")
        # Write the gigabytes just stored back to disk now, not during the bursts.
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


def table_size(stack: Stack) -> str:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('tasks'))").fetchone()
    return str(row[0]) if row else "?"


def summary(runs: list[dict[str, float]], key: str) -> str:
    values = sorted(run[key] for run in runs)
    return f"{values[len(values) // 2]:,.0f} ({values[0]:,.0f}-{values[-1]:,.0f})"


def main() -> int:
    count = env_int("BENCH_SCALE_TASKS", 10_000_000)
    burst, repeats = env_int("BENCH_BURST", 10_000), env_int("BENCH_REPEATS", 3)
    shape = (env_int("DISPATCHERS", 2), env_int("DIALERS", 2), env_int("APIS", 2))
    rows = []
    with ours.running_stack(*shape) as stack:
        with ours.client(stack) as api:
            for stored_before in (True, False):
                if not stored_before:
                    seconds = store(stack, count)
                    log(f"stored {count:,} future tasks in {seconds:.0f} s")
                stored = ours.stored_tasks(stack)
                runs = repeat(
                    repeats, f"burst, {stored:,} stored", lambda: ours.burst(stack, api, burst)
                )
                rows.append(
                    f"| {stored:,} | {table_size(stack)} | {summary(runs, 'due_to_dialed_per_s')} "
                    f"| {summary(runs, 'due_to_finished_per_s')} |"
                )
    free = shutil.disk_usage("/").free / 2**30
    report = "\n".join(
        [
            f"# Scale: {burst:,} due at once, with few and with many stored tasks",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
            f"dispatchers, dialers, apis = {shape}; median (min-max) of {repeats}; "
            f"{free:.0f} GiB disk free after the run.",
            "",
            "| tasks stored before the burst | tasks table with indexes | due → dialed, tasks/s "
            "| due → finished, tasks/s |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
