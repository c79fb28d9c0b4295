"""`make bench-window`: 10,000 tasks waiting for their calling window to open, measured at the
phone.

The whole system as `make run` starts it, with the SIP backend (one dialer) and sipp phones on
loopback that answer (bench/phone_lateness.py's phones: A rings 0.1 s, B rings 0.1 s and talks
0.3 s). A queue with `concurrent_task_limit` LIMIT names an interval whose window opens OPENS_IN
seconds from now, at a whole second of its zone's wall clock (the issue's "09:00": we cannot wait
for the real one, so the window's start_time is that second's wall time, in ZONE). TASKS tasks,
all due already, are added through the REST API before it opens: they must wait as
`delayed_interval`, none may ring before the opening, and at the opening they must start at once
and at the limit's pace.

The witness is the A phone's own message trace (sipp `-trace_msg`): each callback starts at the
first INVITE its A phone received and ends at its A leg's BYE. Reported: how many tasks the API
showed as delayed_interval before the opening, calls the phone saw before it (must be 0), the
first call's delay after the opening, the time until the 1st/50 %/99 %/last call rang, the
calls per second from the first to the last, the most callbacks in progress at the phone at one
moment (must not exceed LIMIT), and the pace the limit allows (LIMIT / the mean callback length
at the phone).

Sizes (environment):
  WINDOW_BENCH_TASKS=10000  WINDOW_BENCH_LIMIT=200  WINDOW_BENCH_OPENS_IN=40
  WINDOW_BENCH_ZONE=Europe/Berlin  WINDOW_BENCH_CPS=1000 (the dialer's calls-per-second cap)
  DISPATCHERS=2  (one dialer)  BENCH_OUT=bench/results (window_opening.md and .json)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg

from bench import ours
from bench.chaos_sip import legs_seen
from bench.phone_lateness import A_PREFIX, B_PREFIX, dialer_env, start_phones, stop_phones
from bench.report import machine, percentile
from bench.run import env_int, log

RESULTS = Path(os.environ.get("BENCH_OUT", Path(__file__).with_name("results")))


def open_at(api: httpx.Client, zone: str, opens: datetime) -> int:
    """An interval open from `opens` (its wall time in `zone`) for two hours; its id."""
    local = opens.astimezone(ZoneInfo(zone))
    closes = local + timedelta(hours=2)
    body = {
        "name": "bench opening",
        "timezone": zone,
        "conditions": [{"start_time": f"{local:%H:%M:%S}", "end_time": f"{closes:%H:%M:%S}"}],
    }
    reply = api.post(f"/client/{ours.CLIENT}/interval/", json=body)
    reply.raise_for_status()
    return int(reply.json()["id"])


def add_waiting_tasks(api: httpx.Client, queue: int, count: int) -> None:
    """count tasks due now (no start time), 1,000 per bulk add."""
    for offset in range(0, count, 1000):
        tasks = [
            {
                "a_number": f"{A_PREFIX}{offset + i:07d}",
                "b_number": f"{B_PREFIX}{offset + i:07d}",
                "try_count": 1,
            }
            for i in range(min(1000, count - offset))
        ]
        url = f"/client/{ours.CLIENT}/task_scheduler/{queue}/tasks/"
        api.post(url, json={"tasks": tasks}).raise_for_status()


def held(api: httpx.Client, queue: int) -> int:
    """Tasks the API shows as delayed_interval (pages of 1,000)."""
    count, after = 0, 0
    while True:
        page = api.get(
            f"/client/{ours.CLIENT}/task_scheduler/{queue}/task/",
            params={"status": "delayed_interval", "limit": 1000, "after_id": after},
        ).json()
        count += len(page)
        if len(page) < 1000:
            return count
        after = page[-1]["id"]


def wait_until_finished(database_url: str, queue: int, expected: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'finished') FROM tasks WHERE queue_id = %s",
                (queue,),
            ).fetchone()
            if row is not None and row[0] == expected:
                return
            time.sleep(1)
    raise TimeoutError(f"the tasks of queue {queue} had not finished after 900 s")


def call_uuids(database_url: str, queue: int) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT call_uuid::text FROM calls WHERE queue_id = %s", (queue,)
        ).fetchall()
    return {str(uuid) for (uuid,) in rows}


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most intervals overlapping at one moment (an end before a start at a tie: a slot
    freed and taken again is not two at once)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def at_the_phone(folder: Path, ours_: set[str], opens: datetime) -> dict[str, Any]:
    legs, _ = legs_seen({"a": sorted((folder / "a").glob("*_messages.log"))})
    spans: list[tuple[datetime, datetime]] = []
    for leg in legs.values():
        if leg.leg == "a0" and leg.call_uuid in ours_ and leg.start is not None:
            # sipp writes its local time without a zone: read as this machine's local time.
            start = leg.start.astimezone()
            end = (leg.bye or leg.end or leg.start).astimezone()
            spans.append((start, end))
    spans.sort()
    starts = [(start - opens).total_seconds() for start, _ in spans]
    lengths = [(end - start).total_seconds() for start, end in spans]
    if not starts:
        return {"rang": 0}
    ringing = len(starts)
    return {
        "rang": ringing,
        "before_opening": sum(1 for s in starts if s < 0),
        "first_ms": round(starts[0] * 1000, 1),
        "p50_s": round(percentile(starts, 0.5), 3),
        "p99_s": round(percentile(starts, 0.99), 3),
        "last_s": round(starts[-1], 3),
        "calls_per_second": round((ringing - 1) / (starts[-1] - starts[0]), 1)
        if ringing > 1 and starts[-1] > starts[0]
        else None,
        "most_at_once": most_at_once(spans),
        "callback_length_mean_s": round(sum(lengths) / len(lengths), 3),
    }


def measure(tasks: int, limit: int, opens_in: int, zone: str, cps: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="window-opening-"))
    port, phones = asyncio.run(start_phones(folder))
    shape = (env_int("DISPATCHERS", 2), 1, 1)
    try:
        with ours.running_stack(*shape, env=dialer_env(port, 0.25, cps)) as stack:
            with ours.client(stack) as api:
                opens = (datetime.now(UTC) + timedelta(seconds=opens_in)).replace(microsecond=0)
                interval = open_at(api, zone, opens)
                queue = ours.new_queue(api, "on", limit)
                api.put(
                    f"/client/{ours.CLIENT}/task_scheduler/{queue}", json={"interval_id": interval}
                ).raise_for_status()
                added = time.monotonic()
                add_waiting_tasks(api, queue, tasks)
                log(f"added {tasks:,} tasks in {time.monotonic() - added:.1f} s")
                if datetime.now(UTC) > opens - timedelta(seconds=3):
                    raise RuntimeError("the tasks were still being added at the opening")
                time.sleep(
                    max((opens - timedelta(seconds=2) - datetime.now(UTC)).total_seconds(), 0)
                )
                shown_held = held(api, queue)
                load_before = os.getloadavg()
            wait_until_finished(stack.database_url, queue, tasks)
            load_after = os.getloadavg()
            uuids = call_uuids(stack.database_url, queue)
            stop_phones(phones)
    finally:
        stop_phones(phones)
    result: dict[str, Any] = {
        "tasks": tasks,
        "limit": limit,
        "zone": zone,
        "opens_utc": f"{opens:%H:%M:%S}",
        "opens_local": f"{opens.astimezone(ZoneInfo(zone)):%H:%M:%S}",
        "shown_delayed_interval_2s_before": shown_held,
        "calls": len(uuids),
        "load_before_opening": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "traces": str(folder),
    } | at_the_phone(folder, uuids, opens)
    if result.get("callback_length_mean_s"):
        result["pace_the_limit_allows"] = round(limit / result["callback_length_mean_s"], 1)
    log(f"window opening: {result}")
    return result


def report(row: dict[str, Any], context: dict[str, Any]) -> str:
    pace = row.get("pace_the_limit_allows")
    return "\n".join(
        [
            "# Tasks waiting for their calling window (bench/window_opening.py)",
            "",
            f"{context['started']}; {context['cpu']}, {context['cores']} cores; one dialer (SIP, "
            f"UDP, DIALER_SIP_CALLS_PER_SECOND={context['cps']}), {context['dispatchers']} "
            f"dispatchers, sipp phones (A rings 0.1 s; B rings 0.1 s, talks 0.3 s).",
            "",
            f"{row['tasks']:,} tasks due already, in a queue with concurrent_task_limit "
            f"{row['limit']} whose window opens at {row['opens_local']} {row['zone']} "
            f"({row['opens_utc']} UTC). Witness: the A phone's own trace (first INVITE received; "
            "the A leg's BYE).",
            "",
            "| what | measured |",
            "|---|---|",
            f"| shown `delayed_interval` by the API 2 s before the opening | "
            f"{row['shown_delayed_interval_2s_before']:,} of {row['tasks']:,} |",
            f"| calls that rang before the opening | {row.get('before_opening', '-')} |",
            f"| calls recorded / rang at the phone | {row['calls']:,} / {row['rang']:,} |",
            f"| first call after the opening | {row.get('first_ms', '-')} ms |",
            f"| half of them rang by | {row.get('p50_s', '-')} s |",
            f"| 99 % by / last | {row.get('p99_s', '-')} s / {row.get('last_s', '-')} s |",
            f"| calls per second, first to last | {row.get('calls_per_second', '-')} |",
            f"| the limit's pace ({row['limit']} / mean callback length at the phone "
            f"{row.get('callback_length_mean_s', '-')} s) | {pace} per second |",
            f"| most callbacks in progress at the phone at once | "
            f"{row.get('most_at_once', '-')} (limit {row['limit']}) |",
            f"| load average before the opening / after | "
            f"{' / '.join(map(str, row['load_before_opening']))}; "
            f"{' / '.join(map(str, row['load_after']))} |",
            "",
        ]
    )


def main() -> int:
    tasks, limit = env_int("WINDOW_BENCH_TASKS", 10_000), env_int("WINDOW_BENCH_LIMIT", 200)
    opens_in, cps = env_int("WINDOW_BENCH_OPENS_IN", 40), env_int("WINDOW_BENCH_CPS", 1000)
    zone = os.environ.get("WINDOW_BENCH_ZONE", "Europe/Berlin")
    context = machine() | {
        "started": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "cps": cps,
        "dispatchers": env_int("DISPATCHERS", 2),
    }
    row = measure(tasks, limit, opens_in, zone, cps)
    text = report(row, context)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "window_opening.md").write_text(text)
    document = {"context": context, "row": row}
    (RESULTS / "window_opening.json").write_text(json.dumps(document, indent=2) + "\n")
    print(text)
    ok = row["rang"] == tasks and row.get("before_opening") == 0
    return 0 if ok and row.get("most_at_once", 0) <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
