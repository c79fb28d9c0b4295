"""`make bench` (webhooks row): tenant B's webhook delivery while tenant A's receiver is slow.

Tenant A adds BENCH_WEBHOOK_FLOOD (1,000) tasks due at once, each with a `before` webhook to
a receiver that answers after BENCH_WEBHOOK_SLOW (13) s, later than the notifier's read
timeout (10 s): every one of A's attempts times out and is retried, for as long as the run
lasts. Once all of A's deliveries are queued and its receiver holds the first of them, tenant B
adds BENCH_WEBHOOK_B_PER_SECOND (5) tasks due at each whole second for BENCH_WEBHOOK_SECONDS
(30) s, each with a `before` webhook to a receiver that answers at once. The notifier runs
with its defaults (200 in flight, 8 per host, 50 per tenant); A's receiver is reached as
`localhost`, B's as `127.0.0.1`.

The evidence is outside our processes: each receiver is a process of its own (the standard
library's http.server) that logs, by its own clock, the moment a request arrives, the
event's `time` and the task's `start_time_utc` from the body. B's delivery time is the
arrival less the task's due time (`start_time_utc`, exact: B's tasks are due at whole
seconds), so it includes dispatch; the dispatchers look ahead 0 s here, so a `before` event
happens at its due time, not up to 0.25 s before it. The event's `time` has whole seconds
only: arrival - `time` is also given, and overstates by up to 1 s.

Two runs, each on a fresh stack: B alone, and B while A's webhooks go to the slow receiver.
Results: bench/results/webhooks.md and webhooks.json (BENCH_OUT).

`python -m bench.webhooks receive --delay S --log FILE` is the receiver (prints its port).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.report import latency_summary, machine
from deploy.local.stack import Stack
from tests.support.stacks import stack_settings

RESULTS = Path(os.environ.get("BENCH_OUT", Path(__file__).with_name("results")))
FLOOD = int(os.environ.get("BENCH_WEBHOOK_FLOOD", "1000"))
SLOW = float(os.environ.get("BENCH_WEBHOOK_SLOW", "13"))
B_PER_SECOND = int(os.environ.get("BENCH_WEBHOOK_B_PER_SECOND", "5"))
SECONDS = int(os.environ.get("BENCH_WEBHOOK_SECONDS", "30"))
PER_HOST = 8  # the notifier's default NOTIFIER_MAX_IN_FLIGHT_PER_HOST
TARGET_P99_MS = 1000.0
WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] webhooks: {message}", file=sys.stderr, flush=True)


# --- the receiver (a process of its own) ------------------------------------------------------


def receive(delay: float, log_path: Path) -> None:
    """Serve POSTs on 127.0.0.1: log each arrival at once, answer 200 after `delay` s."""
    lock = threading.Lock()
    out = log_path.open("a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived = time.time()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with lock:
                line = {
                    "arrived": arrived,
                    "event_id": body["event_id"],
                    "time": body["time"],
                    "due": body["task"]["start_time_utc"],
                }
                out.write(json.dumps(line) + "\n")
            try:
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the notifier gave up waiting (its read timeout)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Receiver:
    """A receiver process and its log."""

    def __init__(self, folder: Path, name: str, delay: float) -> None:
        self.log_path = folder / f"receiver-{name}.jsonl"
        self.log_path.touch()
        command = [sys.executable, "-m", "bench.webhooks", "receive", "--delay", str(delay)]
        self._process = subprocess.Popen(
            [*command, "--log", str(self.log_path)], stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)


# --- the runs ---------------------------------------------------------------------------------


def _stack(folder: Path) -> Stack:
    phones = [{"pattern": "*", "ring_seconds": 0, "talk_seconds": 0}]
    env = {
        "DIALER_SIMULATED_RULES": json.dumps(phones),
        "DISPATCHER_LOOKAHEAD_SECONDS": "0",
        "TENANT_DEFAULT_CALLS_PER_SECOND": "100000",
        "TENANT_DEFAULT_MAX_IN_PROGRESS": "100000",
        # A's receiver is reached as "localhost": ::1 too, should it resolve to that.
        "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.1/32,::1/128",
        "NOTIFIER_HTTP_NETWORKS": "127.0.0.1/32,::1/128",
        "NOTIFIER_ALLOWED_PORTS": "1024-65535",
        "LOG_LEVEL": "WARNING",
        **{f"{kind}_LOG_LEVEL": "WARNING" for kind in ("API", "DISPATCHER", "DIALER")},
    }
    settings = stack_settings(folder, dispatchers=1, dialers=1, apis=1)
    return Stack(settings, log_dir=folder / "logs", service_env=env)


def _client(stack: Stack, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(tenant)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=120)


def _queue(api: httpx.Client, tenant: str) -> int:
    body = {"status": "on", "concurrent_task_limit": 10_000}
    reply = api.post(f"/client/{tenant}/task_scheduler/", json=body)
    reply.raise_for_status()
    return int(reply.json()["id"])


def _scalar(stack: Stack, sql: str, *params: Any) -> Any:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def _flood(stack: Stack, slow: Receiver) -> None:
    """A's tasks, due at once; returns once all their webhooks are queued and the slow
    receiver holds as many as the notifier sends one host at a time."""
    url = f"http://localhost:{slow.port}/a"
    with _client(stack, "slow-a") as api:
        queue = _queue(api, "slow-a")
        task = {"a_number": "+15557770000", "b_number": "+15557770001", "url_before": url}
        for offset in range(0, FLOOD, 1000):
            body = {"tasks": [task] * min(1000, FLOOD - offset)}
            api.post(f"/client/slow-a/task_scheduler/{queue}/tasks/", json=body).raise_for_status()
    queued = "SELECT count(*) FROM webhook_deliveries WHERE client_id = 'slow-a'"
    _wait(lambda: _scalar(stack, queued) >= FLOOD, 300, "A's webhooks to be queued")
    _wait(lambda: len(slow.lines()) >= min(PER_HOST, FLOOD), 120, "A's receiver to fill up")


def _b_tasks(stack: Stack, fast: Receiver) -> list[dict[str, Any]]:
    """B's tasks, B_PER_SECOND due at each whole second, each batch added 2 s ahead; the
    fast receiver's log lines of their webhooks."""
    url = f"http://127.0.0.1:{fast.port}/b"
    with _client(stack, "quick-b") as api:
        queue = _queue(api, "quick-b")
        now = _scalar(stack, "SELECT now()")
        first_due = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=3)
        for index in range(SECONDS):
            due = first_due + timedelta(seconds=index)
            wait = (due - timedelta(seconds=2) - datetime.now(UTC)).total_seconds()
            if wait > 0:
                time.sleep(wait)
            task = {
                "a_number": "+15551230000",
                "b_number": "+15551230001",
                "start_time_utc": due.strftime(WIRE_FORMAT),
                "url_before": url,
            }
            body = {"tasks": [task] * B_PER_SECOND}
            api.post(f"/client/quick-b/task_scheduler/{queue}/tasks/", json=body).raise_for_status()
    expected = SECONDS * B_PER_SECOND
    try:
        _wait(lambda: len(fast.lines()) >= expected, 300, "B's webhooks")
    except TimeoutError:
        log(f"only {len(fast.lines())} of B's {expected} webhooks arrived")
    return fast.lines()


def _in_notifier(stack: Stack) -> list[float]:
    """Of B's delivery time, the part in the notifier (ms): from the delivery's queueing
    (database clock) to the start of its first POST (the notifier's clock). Our processes'
    own record, to tell where the time went; not the measure itself."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM min(a.started_at) - d.created_at) * 1000"
            " FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id"
            " WHERE d.client_id = 'quick-b' GROUP BY d.id, d.created_at"
        ).fetchall()
    return [float(row[0]) for row in rows]


def _utc(wire: str) -> float:
    return datetime.strptime(wire, WIRE_FORMAT).replace(tzinfo=UTC).timestamp()


def run(name: str, flood: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callback-scheduler-webhooks-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # the embedded PostgreSQL runs as another user
        stack = _stack(folder)
        slow = Receiver(folder, "slow-a", SLOW)
        fast = Receiver(folder, "quick-b", 0)
        stack.start()
        try:
            if flood:
                _flood(stack, slow)
            a_before = len(slow.lines())
            lines = _b_tasks(stack, fast)
            slow_lines = slow.lines()
            in_notifier = _in_notifier(stack)
        finally:
            stack.stop()
            slow.stop()
            fast.stop()
    arrivals: dict[str, dict[str, Any]] = {}
    for line in lines:  # the first arrival of each event (at least once: maybe more)
        arrivals.setdefault(line["event_id"], line)
    from_due = [(a["arrived"] - _utc(a["due"])) * 1000 for a in arrivals.values()]
    from_time = [(a["arrived"] - _utc(a["time"])) * 1000 for a in arrivals.values()]
    expected = SECONDS * B_PER_SECOND
    result: dict[str, Any] = {
        "run": name,
        "b_expected": expected,
        "b_received": len(arrivals),
        "b_duplicates": len(lines) - len(arrivals),
        **(latency_summary(from_due) if from_due else {}),
        "p99_from_time_field_ms": (latency_summary(from_time)["p99_ms"] if from_time else math.nan),
        "a_requests_during_b": len(slow_lines) - a_before,
        "p99_in_notifier_ms": (latency_summary(in_notifier)["p99_ms"] if in_notifier else math.nan),
    }
    log(f"{name}: {result}")
    return result


def main() -> int:
    before = machine()
    started = time.monotonic()
    runs = [
        run("B alone", flood=False),
        run(f"B while A's {FLOOD:,} webhooks go to a receiver answering after {SLOW:g} s", True),
    ]
    context = machine()
    context["load_average_before"] = before["load_average"]
    context["minutes"] = round((time.monotonic() - started) / 60, 1)
    context["finished_utc"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    sizes = (
        f"A: {FLOOD:,} tasks due at once, a `before` webhook each to a receiver answering after "
        f"{SLOW:g} s (notifier read timeout 10 s: every attempt times out and is retried); "
        f"B: {B_PER_SECOND} tasks due at each second for {SECONDS} s, a `before` webhook each "
        f"to a receiver answering at once; notifier caps 200 in all, 8 per host, 50 per tenant"
    )
    flooded = runs[-1]
    met = (
        flooded["b_received"] == flooded["b_expected"]
        and flooded.get("p99_ms", math.inf) <= TARGET_P99_MS
    )
    lines = [
        "# Tenant B's webhooks while tenant A's receiver is slow",
        "",
        f"{context}",
        "",
        sizes,
        "",
        "B's delivery time: arrival at B's receiver (its own clock, its own log) - the task's "
        "due time. From the body's `time` (whole seconds, so up to 1 s too high): next to last "
        "column. Last column: the part from queueing to the POST's start, by our own records.",
        "",
        "| run | B received | B p50 | B p99 | B max | A's requests during B's run "
        "| B p99 from `time` | of which in the notifier, p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['run']} | {r['b_received']} of {r['b_expected']} | {r.get('p50_ms', math.nan):,.0f}"
        f" ms | {r.get('p99_ms', math.nan):,.0f} ms | {r.get('max_ms', math.nan):,.0f} ms"
        f" | {r['a_requests_during_b']:,}"
        f" | {r['p99_from_time_field_ms']:,.0f} ms | {r['p99_in_notifier_ms']:,.0f} ms |"
        for r in runs
    ]
    lines += [
        "",
        f"Target (B's p99 ≤ {TARGET_P99_MS:,.0f} ms during A's flood): "
        + ("met" if met else "NOT met"),
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhooks.md").write_text("\n".join(lines) + "\n")
    document = {"context": context, "sizes": sizes, "runs": runs, "target_met": met}
    (RESULTS / "webhooks.json").write_text(json.dumps(document, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receive":
        parser = argparse.ArgumentParser()
        parser.add_argument("receive")
        parser.add_argument("--delay", type=float, required=True)
        parser.add_argument("--log", type=Path, required=True)
        arguments = parser.parse_args()
        receive(arguments.delay, arguments.log)
    else:
        sys.exit(main())
