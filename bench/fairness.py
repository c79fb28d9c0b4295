"""`make bench` (fairness row): tenant B's lateness while tenant A floods the dialers.

Tenant A puts BENCH_FAIR_FLOOD (4,000) tasks due at once in a queue with a limit of 10,000
(its quotas as large): simulated phones that talk for BENCH_FAIR_TALK (1) s, on 2 dialers
with room for 100 calls each, so A alone could keep them full for 20 s. Once A's calls fill
the dialers, tenant B adds one task due every 0.25 s (each added 2 s ahead, as the lateness
bench does) for BENCH_FAIR_SECONDS (15) s: B's lateness is the call's start minus its
start_time_utc, both by the database clock, read by another database client.

Three runs, each on a fresh stack: B alone (no flood); B during A's flood with the dialers'
fair share (DISPATCHER_DIALER_CAPACITY = 2 x 100, what the stack sets); and B during the
flood with no cap (DISPATCHER_DIALER_CAPACITY=0: first come, first served, how dispatch
worked before). Results: bench/results/fairness.md and fairness.json (BENCH_OUT).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.report import latency_summary, machine
from deploy.local.stack import Stack
from tests.support.stacks import stack_settings

RESULTS = Path(os.environ.get("BENCH_OUT", Path(__file__).with_name("results")))
FLOOD = int(os.environ.get("BENCH_FAIR_FLOOD", "4000"))
TALK = float(os.environ.get("BENCH_FAIR_TALK", "1"))
SECONDS = int(os.environ.get("BENCH_FAIR_SECONDS", "15"))
EVERY = 0.25  # seconds between B's tasks
ROOM_PER_DIALER = 100
DIALERS = 2
FLOOD_NUMBER = "+15557770000"
SINGLE_NUMBER = "+15551230000"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] fairness: {message}", file=sys.stderr, flush=True)


def _stack(tmp: Path, capacity: int | None) -> Stack:
    phones = [
        {"pattern": FLOOD_NUMBER, "ring_seconds": 0, "talk_seconds": TALK},
        {"pattern": "*", "ring_seconds": 0, "talk_seconds": 0},
    ]
    env = {
        "DIALER_SIMULATED_RULES": json.dumps(phones),
        "DIALER_MAX_CONCURRENT_CALLS": str(ROOM_PER_DIALER),
        "LOG_LEVEL": "WARNING",
        **{f"{kind}_LOG_LEVEL": "WARNING" for kind in ("API", "DISPATCHER", "DIALER")},
    }
    if capacity is not None:
        env["DISPATCHER_DIALER_CAPACITY"] = str(capacity)
    settings = stack_settings(tmp, dispatchers=2, dialers=DIALERS, apis=1)
    return Stack(settings, log_dir=tmp / "logs", service_env=env)


def _client(stack: Stack, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(tenant)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=120)


def _queue(api: httpx.Client, tenant: str, status: str) -> int:
    body = {"status": status, "concurrent_task_limit": 10_000}
    reply = api.post(f"/client/{tenant}/task_scheduler/", json=body)
    reply.raise_for_status()
    return int(reply.json()["id"])


def _scalar(stack: Stack, sql: str, *params: Any) -> Any:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _flood(stack: Stack) -> None:
    """A's tasks, due at once; returns once its calls fill the dialers."""
    with _client(stack, "flooder") as api:
        queue = _queue(api, "flooder", "off")
        task = {"a_number": FLOOD_NUMBER, "b_number": FLOOD_NUMBER}
        for offset in range(0, FLOOD, 1000):
            body = {"tasks": [task] * min(1000, FLOOD - offset)}
            url = f"/client/flooder/task_scheduler/{queue}/tasks/"
            api.post(url, json=body).raise_for_status()
        api.put(f"/client/flooder/task_scheduler/{queue}", json={"status": "on"}).raise_for_status()
    deadline = time.monotonic() + 60
    full = ROOM_PER_DIALER * DIALERS
    while (
        _scalar(
            stack,
            "SELECT count(*) FROM calls WHERE client_id = 'flooder' AND result = 'in_progress'",
        )
        < full * 0.9
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the flood did not fill the dialers")
        time.sleep(0.05)


def _single_tasks(stack: Stack) -> dict[str, float | int]:
    """B's tasks, one every EVERY seconds, each added 2 s ahead; their lateness (ms)."""
    count = int(SECONDS / EVERY)
    with _client(stack, "single") as api:
        queue = _queue(api, "single", "on")
        first_due = _scalar(stack, "SELECT now()") + timedelta(seconds=2)
        for index in range(count):
            due = first_due + timedelta(seconds=index * EVERY)
            wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
            if wait > 0:
                time.sleep(wait)
            # Start times are whole seconds on the wire: B's tasks come four to a second.
            task = {
                "a_number": SINGLE_NUMBER,
                "b_number": SINGLE_NUMBER,
                "start_time_utc": due.strftime("%Y-%m-%d %H:%M:%S"),
            }
            url = f"/client/single/task_scheduler/{queue}/tasks/"
            api.post(url, json={"tasks": [task]}).raise_for_status()
    deadline = time.monotonic() + 300
    while _scalar(stack, "SELECT count(*) FROM calls WHERE client_id = 'single'") < count:
        if time.monotonic() > deadline:
            raise TimeoutError("B's tasks were not all dialed")
        time.sleep(0.2)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM c.started_at - t.start_time_utc) * 1000 "
            "FROM calls c JOIN tasks t ON t.id = c.task_id WHERE c.client_id = 'single'"
        ).fetchall()
    lateness = [float(r[0]) for r in rows]
    return {**latency_summary(lateness), "over_100_ms": sum(1 for ms in lateness if ms > 100)}


def run(name: str, flood: bool, capacity: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callback-scheduler-fair-") as tmp:
        Path(tmp).chmod(0o755)  # the embedded PostgreSQL runs as another user
        stack = _stack(Path(tmp), capacity)
        stack.start()
        try:
            stack.admin(
                *("set", "flooder", "--max-in-progress", "100000"),
                *("--calls-per-second", "100000", "--max-stored-tasks", "1000000"),
            )
            if flood:
                _flood(stack)
            result = _single_tasks(stack)
            result["flood_calls_before_b_done"] = int(
                _scalar(stack, "SELECT count(*) FROM calls WHERE client_id = 'flooder'")
            )
        finally:
            stack.stop()
    log(f"{name}: {result}")
    return {"run": name, **result}


def main() -> int:
    context = machine()
    started = time.monotonic()
    capacity = ROOM_PER_DIALER * DIALERS
    runs = [
        run("B alone", flood=False, capacity=None),
        run("B while A floods, fair share of the dialers", flood=True, capacity=None),
        run("B while A floods, no cap (first come, first served)", flood=True, capacity=0),
    ]
    context["minutes"] = round((time.monotonic() - started) / 60, 1)
    sizes = (
        f"A: {FLOOD:,} tasks due at once, calls of {TALK:g} s; dialers: {DIALERS} x "
        f"{ROOM_PER_DIALER} calls (capacity {capacity}); B: a task due every {EVERY} s for "
        f"{SECONDS} s"
    )
    lines = [
        "# Tenant B's lateness while tenant A floods the dialers",
        "",
        f"{context}",
        "",
        sizes,
        "",
        "| run | B lateness p50 | p99 | max | B's tasks over 100 ms late "
        "| A's calls placed by the end |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['run']} | {r['p50_ms']:,.0f} ms | {r['p99_ms']:,.0f} ms | {r['max_ms']:,.0f} ms"
        f" | {r['over_100_ms']} of {int(SECONDS / EVERY)} | {r['flood_calls_before_b_done']:,} |"
        for r in runs
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fairness.md").write_text("\n".join(lines) + "\n")
    document = {"context": context, "sizes": sizes, "runs": runs}
    (RESULTS / "fairness.json").write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
