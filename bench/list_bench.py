"""Lists on a queue with 100,000 tasks: latency of pages through Envoy, and api memory.

`make bench` runs it on a fresh stack in a temporary folder and writes bench/results/lists.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg

from deploy.local.stack import Stack
from tests.support.stacks import stack_settings

TASKS = 100_000
BATCH = 1000
REPEATS = 20


def timed(client: httpx.Client, url: str, params: dict[str, str | int]) -> tuple[float, int]:
    started = time.perf_counter()
    reply = client.get(url, params=params)
    reply.raise_for_status()
    return (time.perf_counter() - started) * 1000, len(reply.json())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(stack_settings(Path(tmp)), log_dir=Path(tmp) / "logs")
        stack.start()
        try:
            # 100,000 tasks in one queue: the default quota of stored tasks, so room above it.
            stack.admin("set", "bench", "--max-stored-tasks", "1000000")
            token = stack.token("bench")
            client = httpx.Client(
                base_url=stack.rest_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            )
            # Switched off: the listing is measured, not 100,000 callbacks running beside it.
            queue = client.post(
                "/client/bench/task_scheduler/", json={"name": "big", "status": "off"}
            ).json()
            tasks_url = f"/client/bench/task_scheduler/{queue['id']}/tasks/"
            body = {
                "tasks": [
                    {"a_number": f"+1555{i:07d}", "b_number": "+15550000000", "try_count": 3}
                    for i in range(BATCH)
                ]
            }
            started = time.perf_counter()
            for _ in range(TASKS // BATCH):
                client.post(tasks_url, json=body).raise_for_status()
            insert_seconds = time.perf_counter() - started

            list_url = f"/client/bench/task_scheduler/{queue['id']}/task/"
            last_id = TASKS  # ids start at 1 in a fresh database
            cases: dict[str, dict[str, str | int]] = {
                "unpaged (first 1000)": {},
                "page of 100, first": {"limit": 100},
                "page of 1000, deep (after_id near the end)": {"after_id": last_id - 1500},
                "status filter, page of 1000": {"status": "scheduled"},
                # Each A number occurs once per batch of 1,000: 100 matches in the queue.
                "number search (A or B), 100 matches": {"number": "+15550000500"},
            }
            api_process = next(
                c for c in psutil.Process().children() if "services.api" in " ".join(c.cmdline())
            )
            results: dict[str, object] = {
                "tasks": TASKS,
                "bulk_insert_tasks_per_second": round(TASKS / insert_seconds),
            }
            # Measured on current statistics, as autovacuum leaves them within a minute or so of
            # a bulk insert. Until then PostgreSQL plans for an empty table (a bitmap scan and a
            # sort of all 100,000 rows): a page then takes ~100 ms (README, Benchmarks).
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                conn.execute("ANALYZE tasks")
            for name, params in cases.items():
                samples = [timed(client, list_url, params) for _ in range(REPEATS)]
                millis = sorted(s[0] for s in samples)
                results[name] = {
                    "items": samples[0][1],
                    "median_ms": round(statistics.median(millis), 1),
                    "p95_ms": round(millis[int(len(millis) * 0.95) - 1], 1),
                }
            results["api_rss_mib_after"] = round(api_process.memory_info().rss / 2**20, 1)
            client.close()
        finally:
            stack.stop()
    out = Path(__file__).with_name("results") / "lists.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
