"""`make bench-phone`: lateness measured at the phone, by the phone.

The whole system as `make run` starts it, with the SIP backend (one dialer,
DIALER_SIP_CALLS_PER_SECOND above the due rate) and sipp phones on loopback that answer: A
(PHONE_BENCH_A_PHONES sipp processes, 127.0.0.2 and 127.0.0.21 on) rings 0.1 s and answers,
B (127.0.0.3) rings 0.1 s, answers, talks 0.3 s and hangs up (tests/sip/phones.py
`patient_scenario`). A million tasks due in a year are stored
first (one INSERT ... SELECT, as `make bench` does), then RATE tasks fall due at each whole
second for SECONDS seconds, each second's tasks added through the REST API 2 s ahead.

The witness is the A phone's own message trace (`sipp -trace_msg`: sipp stamps each message
with gettimeofday() as it processes it, so its own queueing counts against us): each call's
lateness is the time its phone received its first INVITE minus the task's start_time_utc
(the Call-ID names the call, the `calls` table the task). p50/p99/max over every call; a
call that never reached the phone fails the run. One row per lookahead (the dispatcher's
default, then 0: no work done ahead of the due time).

Sizes (environment):
  PHONE_BENCH_RATE=200  PHONE_BENCH_SECONDS=60  PHONE_BENCH_FUTURE_TASKS=1000000
  PHONE_BENCH_LOOKAHEADS=0.25,0  PHONE_BENCH_CPS=1000 (the dialer's calls-per-second cap)
  PHONE_BENCH_A_PHONES=8 (sipp processes playing the A phones)
  DISPATCHERS=2  APIS=1  (one dialer)
  BENCH_OUT=bench/results  (phone_lateness.md and phone_lateness.json)
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

import httpx
import psycopg

from bench import ours
from bench.chaos_sip import legs_seen
from bench.phone_floor import witness_floor
from bench.report import machine, percentile
from bench.run import env_int, log
from deploy.local.stack import Stack
from tests.sip.phones import PATIENT_ARGS, Phone, free_phone_port, patient_scenario, start_phone

RESULTS = Path(os.environ.get("BENCH_OUT", Path(__file__).with_name("results")))
B_HOST = "127.0.0.3"
A_PREFIX, B_PREFIX = "+15550", "+16660"
# How many sipp processes play the A phones (PHONE_BENCH_A_PHONES): a call's A number names
# its phone. One sipp works through a second's burst of INVITEs one by one, as no 200
# separate phones would; the witness floor row shows what that costs.
A_PHONES = int(os.environ.get("PHONE_BENCH_A_PHONES", "8"))


def a_hosts(count: int) -> list[str]:
    return ["127.0.0.2", *(f"127.0.0.{20 + i}" for i in range(1, count))]


def a_number(index: int) -> str:
    """The A number of the index-th task: its last digit before the index picks the phone."""
    return f"{A_PREFIX}{index % A_PHONES}{index:07d}"


# The phones' timings: short calls, so that a second's calls are over well before the
# next but one second's are due.
RING_MS, TALK_MS, PATIENCE_MS = 100, 300, 6000
TARGETS = {"p50_ms": 10.0, "p99_ms": 20.0, "max_ms": 100.0}


async def start_phones(folder: Path) -> tuple[int, dict[str, Phone]]:
    hosts = a_hosts(A_PHONES)
    port = free_phone_port(*hosts, B_HOST)
    phones = {}
    for name, host, behaviour, trace in (
        *((f"a/{host}", host, "a", ("-trace_msg",)) for host in hosts),
        ("b", B_HOST, "b", ()),
    ):
        xml = patient_scenario(
            behaviour,  # type: ignore[arg-type]
            ring_ms=RING_MS,
            talk_ms=TALK_MS,
            patience_ms=PATIENCE_MS,
        )
        phones[name] = await start_phone(
            host,
            xml,
            calls=None,
            port=port,
            timeout_seconds=None,
            workdir=folder / name,
            extra_args=(*PATIENT_ARGS, *trace),
        )
    return port, phones


def stop_phones(phones: dict[str, Phone]) -> None:
    for phone in phones.values():
        if phone.process.poll() is None:
            phone.process.terminate()  # sipp flushes its trace and exits
            phone.process.wait(timeout=30)


def dialer_env(port: int, lookahead: float, cps: int) -> dict[str, str]:
    routes = [
        *(
            {"pattern": f"{A_PREFIX}{i}*", "proxy": f"{host}:{port}"}
            for i, host in enumerate(a_hosts(A_PHONES))
        ),
        {"pattern": f"{B_PREFIX}*", "proxy": f"{B_HOST}:{port}"},
    ]
    return {
        "DIALER_BACKEND": "sip",
        "DIALER_SIP_LISTEN": "127.0.0.1:0",
        "DIALER_SIP_ROUTES": json.dumps(routes),
        "DIALER_SIP_CALLS_PER_SECOND": str(cps),
        "DIALER_RING_TIMEOUT_SECONDS": "5",
        "DIALER_MAX_CALL_SECONDS": "5",
        "DISPATCHER_LOOKAHEAD_SECONDS": str(lookahead),
    }


def add_due_tasks(api: httpx.Client, queue: int, rate: int, seconds: int, first: int) -> datetime:
    """`rate` tasks due at each of `seconds` whole seconds, each second's added 2 s ahead
    (as a client scheduling "soon" would; the API's start times have whole seconds); the
    first due second."""
    first_due = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    for second in range(seconds):
        due = first_due + timedelta(seconds=second)
        wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        start = due.strftime("%Y-%m-%d %H:%M:%S")
        index = first + second * rate
        tasks = [
            {
                "a_number": a_number(index + i),
                "b_number": f"{B_PREFIX}{index + i:07d}",
                "try_count": 1,
                "start_time_utc": start,
            }
            for i in range(rate)
        ]
        url = f"/client/{ours.CLIENT}/task_scheduler/{queue}/tasks/"
        api.post(url, json={"tasks": tasks}).raise_for_status()
    return first_due


def wait_for_calls(stack: Stack, queue: int, expected: int) -> None:
    """Until every task of the queue has finished (its call over at both phones)."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'finished'), count(*) FROM tasks "
                "WHERE queue_id = %s",
                (queue,),
            ).fetchone()
            assert row is not None
            if row[1] == expected and row[0] == expected:
                return
            time.sleep(0.5)
    raise TimeoutError(f"tasks of queue {queue} not finished after 300 s")


def due_times(stack: Stack, queue: int) -> dict[str, datetime]:
    """call_uuid -> the task's start_time_utc, for the queue's calls."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.call_uuid::text, t.start_time_utc FROM calls c "
            "JOIN tasks t ON t.id = c.task_id WHERE c.queue_id = %s",
            (queue,),
        ).fetchall()
    return {str(uuid): due for uuid, due in rows}


def retransmitted(folder: Path) -> int:
    """A legs whose INVITE the A phone received more than once: the dialer read the phone's
    answers later than T1 (0.5 s), the sign of a dialer that fell behind."""
    legs, _ = legs_seen({"a": sorted((folder / "a").rglob("*_messages.log"))})
    return sum(1 for leg in legs.values() if leg.invite_copies > len(leg.invites))


def at_the_phone(
    folder: Path, dues: dict[str, datetime]
) -> tuple[list[float], int, dict[datetime, list[float]]]:
    """Each call's lateness at the A phone (ms): its first INVITE received there minus its
    due time; how many calls never reached the phone; the lateness by due second."""
    paths = sorted((folder / "a").rglob("*_messages.log"))
    legs, _ = legs_seen({"a": paths})
    first: dict[str, datetime] = {}
    for leg in legs.values():
        if leg.leg == "a0" and leg.start is not None and leg.call_uuid in dues:
            # sipp writes its local time without a zone: read as this machine's local time.
            at = leg.start.astimezone()
            first[leg.call_uuid] = min(first.get(leg.call_uuid, at), at)
    by_second: dict[datetime, list[float]] = {}
    for uuid, at in first.items():
        by_second.setdefault(dues[uuid], []).append((at - dues[uuid]).total_seconds() * 1000)
    late = [ms for second in by_second.values() for ms in second]
    return late, len(dues) - len(first), by_second


def lateness_figures(late: list[float]) -> dict[str, float]:
    """min / p50 / p99 / max of a row's lateness (ms), as the table shows them."""
    return {
        "min_ms": round(min(late), 1),
        "p50_ms": round(percentile(late, 0.50), 1),
        "p99_ms": round(percentile(late, 0.99), 1),
        "max_ms": round(max(late), 1),
    }


def seconds_summary(by_second: dict[datetime, list[float]]) -> dict[str, Any]:
    """How the due seconds went: a second whose first call was already late points before
    the send (the claim, NATS, the record); a wide one, at the burst's CPU and the phone."""
    firsts = {due: min(ms) for due, ms in by_second.items()}
    spreads = [max(ms) - min(ms) for ms in by_second.values()]
    worst = sorted(firsts, key=lambda due: -firsts[due])[:5]
    return {
        "due_seconds": len(by_second),
        "seconds_first_call_over_100_ms": sum(1 for ms in firsts.values() if ms > 100),
        "first_call_p50_ms": round(percentile(list(firsts.values()), 0.5), 1),
        "spread_in_second_p50_ms": round(percentile(spreads, 0.5), 1),
        "spread_in_second_max_ms": round(max(spreads), 1),
        "worst_seconds": [
            f"{due:%H:%M:%S}: first {firsts[due]:.0f} ms, last {max(by_second[due]):.0f} ms"
            for due in worst
        ],
    }


def measure(lookahead: float, rate: int, seconds: int, future: int, cps: int) -> dict[str, Any]:
    """One row: a fresh stack and fresh phones with this lookahead."""
    folder = Path(tempfile.mkdtemp(prefix="phone-lateness-"))
    port, phones = asyncio.run(start_phones(folder))
    shape = (env_int("DISPATCHERS", 2), 1, env_int("APIS", 1))
    try:
        with ours.running_stack(*shape, env=dialer_env(port, lookahead, cps)) as stack:
            with ours.client(stack) as api:
                stored = ours.store_future_tasks(stack, api, future)
                log(f"lookahead {lookahead}: stored {future:,} future tasks in {stored:.0f} s")
                queue = ours.new_queue(api, "on")
                load_before = os.getloadavg()
                add_due_tasks(api, queue, rate, seconds, first=1)
                load_during = os.getloadavg()
            wait_for_calls(stack, queue, rate * seconds)
            dues = due_times(stack, queue)
            stop_phones(phones)
    finally:
        stop_phones(phones)
    # Kept beside the phones' traces: call_uuid -> due time, to join them with other clocks.
    (folder / "dues.json").write_text(json.dumps({u: d.timestamp() for u, d in dues.items()}))
    late, unrung, by_second = at_the_phone(folder, dues)
    result: dict[str, Any] = {
        "lookahead_s": lookahead,
        "calls": len(dues),
        "at_the_phone": len(late),
        "never_at_the_phone": unrung,
        "early": sum(1 for ms in late if ms < 0),
        "invites_retransmitted": retransmitted(folder),
        "load_before": [round(x, 2) for x in load_before],
        "load_at_end_of_due_seconds": [round(x, 2) for x in load_during],
        "traces": str(folder),
    }
    if late:
        result |= lateness_figures(late) | seconds_summary(by_second)
    log(f"lookahead {lookahead}: {result}")
    return result


def measure_floor(rate: int, seconds: int) -> dict[str, Any]:
    """The witness floor row: the same A phone, the same due rate, a sender that takes no
    time (bench/phone_floor.py)."""
    folder = Path(tempfile.mkdtemp(prefix="phone-floor-"))
    scenario = {"ring_ms": RING_MS, "talk_ms": TALK_MS, "patience_ms": PATIENCE_MS}
    load_before = os.getloadavg()
    late = witness_floor(a_hosts(A_PHONES), rate, seconds, folder, scenario)
    result: dict[str, Any] = {
        "lookahead_s": "witness floor",
        "calls": rate * seconds,
        "at_the_phone": len(late),
        "never_at_the_phone": rate * seconds - len(late),
        "load_before": [round(x, 2) for x in load_before],
        "load_at_end_of_due_seconds": [round(x, 2) for x in os.getloadavg()],
        "traces": str(folder),
    }
    if late:
        result |= lateness_figures(late)
    log(f"witness floor: {result}")
    return result


def verdict(row: dict[str, Any]) -> str:
    if "p50_ms" not in row:
        return "no call reached the phone"
    missed = [
        f"{name.removesuffix('_ms')} {row[name]} > {target:g} ms"
        for name, target in TARGETS.items()
        if row[name] > target
    ]
    if row["never_at_the_phone"]:
        missed.append(f"{row['never_at_the_phone']} calls never reached the phone")
    return "met" if not missed else "NOT met: " + "; ".join(missed)


def report(rows: list[dict[str, Any]], context: dict[str, Any]) -> str:
    lines = [
        "# Lateness at the phone (bench/phone_lateness.py)",
        "",
        f"{context['started']}; {context['cpu']}, {context['cores']} cores; load average "
        f"before {context['load_before']}, after {context['load_after']}; "
        f"{context['rate']} due per second for {context['seconds']} s, "
        f"{context['future']:,} future tasks stored; one dialer (SIP, UDP, "
        f"DIALER_SIP_CALLS_PER_SECOND={context['cps']}), {context['dispatchers']} dispatchers. "
        "Lateness = the A phone's first INVITE received (sipp's own trace) - start_time_utc.",
        "",
        "| lookahead | calls | at the phone | min | p50 | p99 | max | load (1/5/15 min) "
        "at the end of the due seconds | targets p50 <= 10, p99 <= 20, max <= 100 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [*rows, context["floor"]]:
        figures = " | ".join(
            f"{row[k]} ms" if k in row else "-" for k in ("min_ms", "p50_ms", "p99_ms", "max_ms")
        )
        label = row["lookahead_s"]
        label = label if isinstance(label, str) else f"{label} s"
        lines.append(
            f"| {label} | {row['calls']} | {row['at_the_phone']} | {figures} "
            f"| {' / '.join(str(x) for x in row['load_at_end_of_due_seconds'])} "
            f"| {verdict(row)} |"
        )
    lines += [
        "",
        "The witness floor: the same A phones, at the same rate, called by a plain UDP socket "
        "that sends each second's INVITEs back to back at the whole second (bench/"
        "phone_floor.py), then ACKs and hangs up. sipp stamps a message as it processes it, "
        "one process working through the burst: what it reports there is the phone's own "
        "queueing, and no dialer can be measured below it with this phone.",
        "",
    ]
    for row in rows:
        if "due_seconds" in row:
            lines.append(
                f"- lookahead {row['lookahead_s']} s: {row['early']} calls early (min above); "
                f"{row.get('invites_retransmitted', '?')} calls whose INVITE the phone received "
                "again (the dialer behind by more than T1); "
                f"by due second: first call p50 {row['first_call_p50_ms']} ms, "
                f"{row['seconds_first_call_over_100_ms']} of {row['due_seconds']} seconds whose "
                f"first call was over 100 ms late; spread within a second p50 "
                f"{row['spread_in_second_p50_ms']} ms, max {row['spread_in_second_max_ms']} ms; "
                f"latest seconds: {'; '.join(row['worst_seconds'])}"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    rate, seconds = env_int("PHONE_BENCH_RATE", 200), env_int("PHONE_BENCH_SECONDS", 60)
    future = env_int("PHONE_BENCH_FUTURE_TASKS", 1_000_000)
    cps = env_int("PHONE_BENCH_CPS", 1000)
    lookaheads = [float(x) for x in os.environ.get("PHONE_BENCH_LOOKAHEADS", "0.25,0").split(",")]
    context = machine()
    context |= {
        "started": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "rate": rate,
        "seconds": seconds,
        "future": future,
        "cps": cps,
        "dispatchers": env_int("DISPATCHERS", 2),
    }
    context["cores"] = os.cpu_count()
    context["floor"] = measure_floor(rate, seconds)
    rows = [measure(lookahead, rate, seconds, future, cps) for lookahead in lookaheads]
    context["load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = report(rows, context)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phone_lateness.md").write_text(text)
    document = {"context": context, "rows": rows}
    (RESULTS / "phone_lateness.json").write_text(json.dumps(document, indent=2) + "\n")
    print(text)
    return 0 if all(r["never_at_the_phone"] == 0 and "p50_ms" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
