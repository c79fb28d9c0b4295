"""`make chaos`: the system's invariants while its parts are killed at random.

Starts the whole system on Debian's PostgreSQL (a server that can be crashed and started
again under the stack): the api, 3 dispatchers, 2 dialers, the notifier, a local webhook
receiver and NATS. Two runs (`--backend`):

- `sip` (`make chaos`): the dialers place real SIP calls to sipp phones on loopback, and
  the phones' own message traces are the witnesses (bench/chaos_sip.py lists the phones
  and the invariants read from their traces);
- `simulated` (`make chaos CHAOS_BACKEND=simulated`, faster per call, more tasks): random
  simulated phones (random ring and talk times and outcomes) inside the dialers.

Loads tasks over the REST API across several tenants and queues with small
concurrent_task_limits, retries (try_count) and pauses (try_again_pause); part of them are
loaded while the faults run. For a bounded time it repeatedly kills one part with SIGKILL
(api, a dispatcher, a dialer, the notifier, nats-server) or crashes PostgreSQL
(`pg_ctl stop -m immediate`), and starts it again after a random pause. Then it waits for
quiescence and checks, printing each figure:

1. every task is finished: none lost (each task loaded exists once), none stuck;
2. simulated: no (task, attempt) was dialed twice, from the dialers' own "dial" log lines
   and the simulated phones' record of every call they received (by call_uuid), besides
   `calls`; no queue ever had more calls in progress than its concurrent_task_limit (from
   the attempts' start and end times in `calls`).
   sip: the same, and every try rang a phone, and no task got more tries than try_count,
   all from the sipp phones' traces (bench/chaos_sip.py);
3. every webhook event a task earned was received at least once, and each task's events
   were first received in order (the receiver's log file, by event id).

Exits 1 if any invariant fails. `python -m bench.chaos --help` lists the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg

from bench import chaos_sip
from bench.chaos_sip import CallRow, ChaosPhones
from deploy.local.debian_postgres import DebianPostgres, create_debian_postgres
from deploy.local.stack import Stack
from tests.support.calls import max_overlap
from tests.support.ports import free_port
from tests.support.stacks import permission_violations, service_env, stack_settings

log = logging.getLogger("chaos")

KINDS = ("api", "dispatcher", "dialer", "notifier", "nats", "postgres")
DISPATCHERS = 3
DIALERS = 2
# Phones: random outcome per dial (mostly answered), random ring and talk times.
RING_TIMEOUT = 0.5
MAX_CALL = 0.6
PHONES = [
    {
        "pattern": "*",
        "behaviours": {"answer": 7, "busy": 1, "no_answer": 1, "reject": 1},
        "ring_seconds": 0.02,
        "ring_seconds_max": 0.3,
        "talk_seconds": 0.05,
        "talk_seconds_max": 0.8,
    }
]
# The lease covers the longest call (A rings, then B rings, then they talk) with a margin.
LEASE = 4.0
EVENT_RANK = {"before": 0, "before_again": 0, "success": 1, "after": 2}
Backend = Literal["sip", "simulated"]
# `make chaos`'s sizes per backend: (tasks, seconds of faults). SIP calls last longer
# (ring 0.1 s, talk 0.3 s, no answer 2 s) and every message goes through sipp's traces.
SIZES: dict[str, tuple[int, float]] = {"sip": (4000, 120.0), "simulated": (20_000, 240.0)}


@dataclass(frozen=True)
class ChaosOptions:
    tasks: int = 20_000
    # Seconds of faults; the load goes on being added during the first part of it.
    duration: float = 240.0
    seed: int = 1
    backend: Backend = "simulated"
    tenants: int = 5
    queues_per_tenant: int = 4
    # A fraction of the tasks have all four webhook URLs (each delivery is an HTTP POST).
    webhook_fraction: float = 0.25
    # Share of the tasks added while the faults run (the rest before they start).
    loaded_during_faults: float = 0.3
    # How long a killed part stays down, and the quiet time between two faults (seconds).
    down_seconds: tuple[float, float] = (0.5, 3.0)
    between_seconds: tuple[float, float] = (0.5, 3.0)
    quiescence_timeout: float = 900.0
    state_dir: Path | None = None


@dataclass
class Figures:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def check(self, ok: bool, text: str) -> None:
        self.say(f"[{'ok' if ok else 'FAIL'}] {text}")
        if not ok:
            self.failures.append(text)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- the webhook receiver -----------------------------------------------------------------------


class Receiver:
    """Accepts every webhook (a few answered 503 once, to exercise retries) and logs each
    POST's event id in arrival order, in memory and in a file."""

    def __init__(self, log_path: Path, seed: int) -> None:
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._refused: set[str] = set()
        self.log_path = log_path
        self._log = log_path.open("a", buffering=1)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                event_id = self.headers.get("X-Callback-Event-Id", "")
                status = receiver.record(event_id)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def record(self, event_id: str) -> int:
        with self._lock:
            if event_id not in self._refused and self._rng.random() < 0.02:
                self._refused.add(event_id)
                self._log.write(f"{time.time():.6f} 503 {event_id}\n")
                return 503
            self.received.append(event_id)
            self._log.write(f"{time.time():.6f} 200 {event_id}\n")
            return 200

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._log.close()


# --- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueInfo:
    client_id: str
    queue_id: int
    limit: int


def rest(stack: Stack, client_id: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {stack.token(client_id)}"}
    return httpx.Client(base_url=stack.rest_url, headers=headers, timeout=60)


def retrying(what: str, action: Callable[[], httpx.Response], deadline: float = 300) -> Any:
    """Run a REST call until it answers 200 (the api or PostgreSQL may be down meanwhile)."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            reply = action()
            if reply.status_code == 200:
                return reply.json()
            if reply.status_code not in (502, 503, 504):
                raise RuntimeError(f"{what}: HTTP {reply.status_code} {reply.text[:500]}")
        except httpx.TransportError:
            pass
        if time.monotonic() > give_up:
            raise RuntimeError(f"{what}: no answer for {deadline} s")
        time.sleep(0.3)


def make_queues(stack: Stack, options: ChaosOptions, rng: random.Random) -> list[QueueInfo]:
    queues = []
    for t in range(options.tenants):
        client_id = f"chaos-{t}"
        with rest(stack, client_id) as api:
            for q in range(options.queues_per_tenant):
                limit = rng.randint(1, 8)
                body = {"name": f"q{q}", "status": "on", "concurrent_task_limit": limit}
                created = retrying(
                    "create queue",
                    lambda api=api, body=body, c=client_id: api.post(  # type: ignore[misc]
                        f"/client/{c}/task_scheduler/", json=body
                    ),
                )
                queues.append(QueueInfo(client_id, int(created["id"]), limit))
    return queues


def task_body(
    index: int, rng: random.Random, hooks: str | None, backend: Backend = "simulated"
) -> dict[str, Any]:
    if backend == "sip":
        numbers = chaos_sip.task_numbers(index, rng)
    else:
        numbers = {"a_number": f"+1555{index:07d}", "b_number": f"+1666{index:07d}"}
    task: dict[str, Any] = {
        "name": f"chaos-{index}",
        **numbers,
        "try_count": rng.randint(1, 3),
        "try_again_pause": rng.randint(0, 2),
    }
    if hooks is not None:
        for event in ("before", "before_again", "success", "after"):
            task[f"url_{event}"] = f"{hooks}/{event}"
    return task


class Loader:
    """Adds tasks in batches of up to 1000 per queue; a batch whose answer was lost (the
    api killed mid-request) is looked up by task name before it is sent again, so that a
    retry never adds a task twice."""

    def __init__(self, stack: Stack, queues: list[QueueInfo], plan: list[list[dict[str, Any]]]):
        self._stack = stack
        self._queues = queues
        self._plan = plan  # per queue: its task bodies
        self.added = 0

    def batches(self) -> Iterator[tuple[QueueInfo, list[dict[str, Any]]]]:
        cursors = [0] * len(self._queues)
        while any(c < len(p) for c, p in zip(cursors, self._plan, strict=True)):
            for i, queue in enumerate(self._queues):
                batch = self._plan[i][cursors[i] : cursors[i] + 500]
                cursors[i] += len(batch)
                if batch:
                    yield queue, batch

    def add(self, queue: QueueInfo, batch: list[dict[str, Any]]) -> None:
        path = f"/client/{queue.client_id}/task_scheduler/{queue.queue_id}/tasks/"
        deadline = time.monotonic() + 300
        with rest(self._stack, queue.client_id) as api:
            while True:
                try:
                    reply = api.post(path, json={"tasks": batch})
                    if reply.status_code == 200:
                        break
                    if reply.status_code not in (502, 503, 504):
                        raise RuntimeError(f"add tasks: HTTP {reply.status_code} {reply.text}")
                except httpx.TransportError:
                    pass
                # Unknown whether the batch was stored (all or nothing): look before resending.
                if self._stored(queue, batch[0]["name"]):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("add tasks: no answer for 300 s")
                time.sleep(0.3)
        self.added += len(batch)

    def _stored(self, queue: QueueInfo, name: str) -> bool:
        try:
            with psycopg.connect(self._stack.database_url, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT 1 FROM tasks WHERE queue_id = %s AND name = %s", (queue.queue_id, name)
                ).fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None


# --- faults -------------------------------------------------------------------------------------


class Faults:
    def __init__(self, stack: Stack, postgres: DebianPostgres, rng: random.Random) -> None:
        self._stack = stack
        self._postgres = postgres
        self._rng = rng
        self.kills: Counter[str] = Counter()

    def order(self) -> Iterator[str]:
        """Every kind once per round, in a random order each round."""
        while True:
            kinds = list(KINDS)
            self._rng.shuffle(kinds)
            yield from kinds

    def inflict(self, kind: str, down: float) -> str:
        stack = self._stack
        if kind == "postgres":
            self._postgres.stop("immediate")
            time.sleep(down)  # the outage itself: how long the server stays down
            self._postgres.start()
            name = "postgres"
        elif kind in ("api", "nats"):
            name = kind
            stack.kill_child(name)
            time.sleep(down)
            stack.start_api() if kind == "api" else stack.start_nats()
        else:
            index = self._rng.randrange({"dispatcher": DISPATCHERS, "dialer": DIALERS}.get(kind, 1))
            name = f"{kind}-{index}"
            log.info("killing %s", name)  # its restart can take seconds: log the kill's time
            stack.kill_child(name)
            time.sleep(down)
            stack.start_replica(kind, index)
        self.kills[kind] += 1
        return name


# --- checks -------------------------------------------------------------------------------------


def log_entries(log_dir: Path, pattern: str, action: str) -> Iterator[dict[str, Any]]:
    marker = f'"action": "{action}"'
    for path in sorted(log_dir.glob(pattern)):
        for line in path.read_text(errors="replace").splitlines():
            if marker in line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by SIGKILL


def expected_events(task: dict[str, Any]) -> list[str]:
    """The webhook events a finished task earned, in order (its URLs are all set)."""
    attempts = int(task["attempts"])
    ids = [f"{task['id']}:1:before"] if attempts >= 1 else []
    ids += [f"{task['id']}:{n}:before_again" for n in range(2, attempts + 1)]
    if task["finish_result"] == "success":
        ids.append(f"{task['id']}:{attempts}:success")
    ids.append(f"{task['id']}:{attempts}:after")
    return ids


def seq_of(event_id: str) -> tuple[int, int]:
    _, attempt, event = event_id.split(":")
    return int(attempt), EVENT_RANK[event]


def received_events(receiver_log: Path) -> list[str]:
    """The event ids the receiver accepted (200), in arrival order, from its log file."""
    events = []
    for line in receiver_log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "200":
            events.append(parts[2])
    return events


def check_invariants(
    stack: Stack,
    queues: list[QueueInfo],
    options: ChaosOptions,
    receiver_log: Path,
    hooked: set[str],
    figures: Figures,
    phones: ChaosPhones | None = None,
) -> None:
    assert stack.log_dir is not None
    queue_ids = [q.queue_id for q in queues]
    with psycopg.connect(stack.database_url) as conn:
        columns = ("id", "name", "status", "attempts", "finish_result", "queue_id", "try_count")
        tasks = [
            dict(zip((*columns, "finish_comment"), r, strict=True))
            for r in conn.execute(
                "SELECT id, name, status, attempts, finish_result, queue_id, try_count, "
                "finish_comment FROM tasks WHERE queue_id = ANY(%s)",
                (queue_ids,),
            )
        ]
        calls = conn.execute(
            "SELECT call_uuid, task_id, attempt, queue_id, started_at, ended_at, result "
            "FROM calls WHERE queue_id = ANY(%s)",
            (queue_ids,),
        ).fetchall()
        pending_hooks = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'), "
            "count(*) FILTER (WHERE status IN ('dead', 'failed')) FROM webhook_deliveries"
        ).fetchone()
    assert pending_hooks is not None

    # 1. Every task finished; none lost, none doubled.
    names = Counter(t["name"] for t in tasks)
    missing = options.tasks - len(set(names) & {f"chaos-{i}" for i in range(options.tasks)})
    doubled = sum(1 for n in names.values() if n > 1)
    by_status = Counter(t["status"] for t in tasks)
    results = Counter(t["finish_result"] for t in tasks if t["status"] == "finished")
    figures.say(f"tasks loaded: {options.tasks}; in the database: {len(tasks)}")
    figures.say(f"tasks by status: {dict(sorted(by_status.items()))}; results: {dict(results)}")
    attempts_total = sum(int(t["attempts"]) for t in tasks)
    figures.say(f"attempts started: {attempts_total}; calls recorded: {len(calls)}")
    figures.check(missing == 0, f"tasks lost: {missing}")
    figures.check(doubled == 0, f"tasks added twice: {doubled}")
    stuck = len(tasks) - by_status["finished"]
    figures.check(stuck == 0, f"tasks not finished (stuck): {stuck}")
    # Every service ran as its own NATS user: none was ever refused a subject it needs.
    violations = permission_violations(stack)
    figures.say(f"NATS users: {stack.settings.nats_users}")
    figures.check(not violations, f"NATS permission violations logged: {len(violations)}")

    if phones is not None:
        # 2. The phones' witness: no attempt INVITEd twice, every try rang a phone, no more
        # tries than try_count, no queue over its limit (bench/chaos_sip.py).
        chaos_sip.check_sip_invariants(
            tasks,
            [CallRow(str(c[0]), int(c[1]), int(c[2]), int(c[3])) for c in calls],
            {q.queue_id: q.limit for q in queues},
            phones,
            figures.say,
            figures.check,
        )
    else:
        check_simulated_calls(stack, queues, calls, figures)
    check_webhooks(tasks, received_events(receiver_log), hooked, pending_hooks, figures)


def check_simulated_calls(
    stack: Stack, queues: list[QueueInfo], calls: list[tuple[Any, ...]], figures: Figures
) -> None:
    assert stack.log_dir is not None
    queue_ids = [q.queue_id for q in queues]
    # 2. No (task, attempt) dialed twice: the dialers' log lines, the phones' own record.
    dial_lines = Counter(
        (int(e["task_id"]), int(e["attempt"]))
        for e in log_entries(stack.log_dir, "dialer-*.log", "dial")
        if int(e["queue_id"]) in queue_ids
    )
    phone_dials = Counter(
        str(e["call_uuid"]) for e in log_entries(stack.log_dir, "dialer-*.log", "simulated_dial")
    )
    attempt_of_call = {str(c[0]): (int(c[1]), int(c[2])) for c in calls}
    phone_attempts = Counter(
        attempt_of_call[uuid] for uuid in phone_dials.elements() if uuid in attempt_of_call
    )
    unknown_calls = [uuid for uuid in phone_dials if uuid not in attempt_of_call]
    figures.say(
        f"dials logged by the dialers: {sum(dial_lines.values())} "
        f"({len(dial_lines)} distinct (task, attempt)); "
        f"calls received by the simulated phones: {sum(phone_dials.values())}"
    )
    figures.check(
        max(dial_lines.values(), default=0) <= 1,
        "(task, attempt) dialed twice per the dialers' logs: "
        f"{sum(1 for n in dial_lines.values() if n > 1)}",
    )
    figures.check(
        max(phone_attempts.values(), default=0) <= 1,
        "(task, attempt) dialed twice per the phones' record: "
        f"{sum(1 for n in phone_attempts.values() if n > 1)}",
    )
    figures.check(
        not unknown_calls, f"calls the phones received without a calls row: {len(unknown_calls)}"
    )
    figures.check(
        set(dial_lines) <= set(attempt_of_call.values()),
        f"dials logged without a calls row: {len(set(dial_lines) - set(attempt_of_call.values()))}",
    )

    # 3. No queue over its limit: attempts' start and end times from the call records.
    worst = []
    for queue in queues:
        intervals: list[tuple[datetime, datetime]] = [
            (c[4], c[5]) for c in calls if c[3] == queue.queue_id and c[5] is not None
        ]
        open_calls = sum(1 for c in calls if c[3] == queue.queue_id and c[5] is None)
        peak = max_overlap(intervals)
        worst.append((peak, queue.limit, queue.queue_id, open_calls))
    over = [w for w in worst if w[0] > w[1] or w[3]]
    figures.say(
        "queues (peak calls in progress / limit): "
        + ", ".join(f"q{qid} {peak}/{limit}" for peak, limit, qid, _ in worst)
    )
    figures.check(
        not over, f"queues over their concurrent_task_limit (or calls never ended): {len(over)}"
    )


def check_webhooks(
    tasks: list[dict[str, Any]],
    received: list[str],
    hooked: set[str],
    pending_hooks: tuple[Any, ...],
    figures: Figures,
) -> None:
    # 3. Webhooks: every earned event received at least once, first arrivals in order per task.
    first_seen: dict[str, int] = {}
    for position, event_id in enumerate(received):
        first_seen.setdefault(event_id, position)
    expected: dict[int, list[str]] = {
        t["id"]: expected_events(t) for t in tasks if t["name"] in hooked
    }
    wanted = [e for events in expected.values() for e in events]
    not_received = [e for e in wanted if e not in first_seen]
    out_of_order = 0
    for events in expected.values():
        arrived = sorted((first_seen[e], e) for e in events if e in first_seen)
        order = [seq_of(e) for _, e in arrived]
        if order != sorted(order):
            out_of_order += 1
    duplicates = len(received) - len(first_seen)
    unexpected = len(set(first_seen) - set(wanted))
    figures.say(
        f"webhooks: {len(wanted)} events earned by {len(expected)} tasks with URLs; "
        f"{len(received)} POSTs accepted ({duplicates} duplicates); "
        f"deliveries pending {pending_hooks[0]}, failed or dead {pending_hooks[1]}"
    )
    figures.check(not not_received, f"webhook events never received: {len(not_received)}")
    figures.check(out_of_order == 0, f"tasks whose events arrived out of order: {out_of_order}")
    figures.check(unexpected == 0, f"webhook events received that no task earned: {unexpected}")


# --- the run ------------------------------------------------------------------------------------


def quiet(stack: Stack, queue_ids: list[int]) -> bool:
    """Every task finished, the outbox empty, every webhook event the tasks earned queued
    (some may still be in NATS) and no delivery pending."""
    try:
        with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM tasks WHERE queue_id = ANY(%(q)s) "
                "        AND status <> 'finished'), "
                "       (SELECT count(*) FROM outbox), "
                "       (SELECT coalesce(sum(attempts + (finish_result = 'success')::int + 1), 0)"
                "        FROM tasks WHERE queue_id = ANY(%(q)s) AND url_after <> ''), "
                "       (SELECT count(*) FROM webhook_deliveries), "
                "       (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
                {"q": queue_ids},
            ).fetchone()
    except psycopg.OperationalError:
        return False
    if row is None:
        return False
    unfinished, outbox, earned, queued, pending = row
    return bool(unfinished == 0 and outbox == 0 and queued >= earned and pending == 0)


@contextmanager
def chaos_stack(
    options: ChaosOptions, state_dir: Path, phones: ChaosPhones | None = None
) -> Iterator[tuple[Stack, DebianPostgres]]:
    postgres = create_debian_postgres(free_port(), max_connections=300)
    try:
        overrides = {
            "DIALER_SIMULATED_RULES": json.dumps(PHONES),
            "DIALER_SIMULATED_SEED": str(options.seed),
            "DIALER_RING_TIMEOUT_SECONDS": str(RING_TIMEOUT),
            "DIALER_MAX_CALL_SECONDS": str(MAX_CALL),
            "DISPATCHER_ATTEMPT_LEASE_SECONDS": str(LEASE),
            "NOTIFIER_MAX_ATTEMPTS": "30",
            "NOTIFIER_BACKOFF_BASE_SECONDS": "0.2",
            "NOTIFIER_BACKOFF_CAP_SECONDS": "2",
            "NOTIFIER_READ_TIMEOUT_SECONDS": "2",
        }
        if phones is not None:
            overrides |= phones.dialer_env()
            overrides["DISPATCHER_ATTEMPT_LEASE_SECONDS"] = str(chaos_sip.LEASE)
        env = service_env(**overrides)
        stack = Stack(
            stack_settings(
                state_dir, database_url=postgres.url, dispatchers=DISPATCHERS, dialers=DIALERS
            ),
            log_dir=state_dir / "logs",
            service_env=env,
        )
        stack.start()
        try:
            yield stack, postgres
        finally:
            stack.stop()
    finally:
        try:
            postgres.stop("fast")
        finally:
            postgres.remove()


def run(options: ChaosOptions) -> Figures:
    rng = random.Random(options.seed)
    figures = Figures()
    started = time.monotonic()
    state_dir = options.state_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    receiver = Receiver(state_dir / "receiver.log", options.seed)
    receiver.start()
    phones = ChaosPhones(state_dir / "phones") if options.backend == "sip" else None
    figures.say(
        f"chaos ({options.backend} phones): {options.tasks} tasks, {options.tenants} tenants x "
        f"{options.queues_per_tenant} queues, {options.duration:.0f} s of faults, "
        f"seed {options.seed}; logs in {state_dir}"
    )
    try:
        if phones is not None:
            phones.start()
        with chaos_stack(options, state_dir, phones) as (stack, postgres):
            queues = make_queues(stack, options, rng)
            hooked: set[str] = set()
            plan: list[list[dict[str, Any]]] = [[] for _ in queues]
            for index in range(options.tasks):
                with_hooks = rng.random() < options.webhook_fraction
                if with_hooks:
                    hooked.add(f"chaos-{index}")
                # Each queue gets tasks in proportion to its limit, so that all drain together.
                queue_index = rng.choices(range(len(queues)), weights=[q.limit for q in queues])[0]
                plan[queue_index].append(
                    task_body(index, rng, receiver.url if with_hooks else None, options.backend)
                )
            loader = Loader(stack, queues, plan)
            batches = list(loader.batches())
            split = round(len(batches) * (1 - options.loaded_during_faults))
            for queue, batch in batches[:split]:
                loader.add(queue, batch)
            figures.say(f"loaded {loader.added} tasks before the faults")

            # The rest of the load arrives while the faults run.
            load_error: list[BaseException] = []

            def load_rest() -> None:
                # Spread over the first half of the faults, so that kills hit the loading too.
                rest_of_them = batches[split:]
                pace = options.duration / 2 / max(1, len(rest_of_them))
                begun = time.monotonic()
                try:
                    for number, (queue, batch) in enumerate(rest_of_them):
                        time.sleep(max(0.0, begun + number * pace - time.monotonic()))
                        loader.add(queue, batch)
                except BaseException as err:  # reported below
                    load_error.append(err)

            loading = threading.Thread(target=load_rest, daemon=True)
            loading.start()
            faults = Faults(stack, postgres, rng)
            fault_started = time.monotonic()
            kinds = faults.order()
            while time.monotonic() - fault_started < options.duration or len(faults.kills) < len(
                KINDS
            ):
                time.sleep(rng.uniform(*options.between_seconds))
                kind = next(kinds)
                down = rng.uniform(*options.down_seconds)
                name = faults.inflict(kind, down)
                log.info("killed and restarted %s (down %.1f s)", name, down)
            fault_seconds = time.monotonic() - fault_started
            figures.kills = dict(faults.kills)
            loading.join(timeout=600)
            if load_error or loading.is_alive():
                raise RuntimeError(f"loading failed: {load_error or 'still running'}")
            figures.say(
                f"faults: {sum(faults.kills.values())} in {fault_seconds:.0f} s: "
                + ", ".join(f"{kind} {faults.kills[kind]}" for kind in KINDS)
            )
            queue_ids = [q.queue_id for q in queues]
            deadline = time.monotonic() + options.quiescence_timeout
            while not quiet(stack, queue_ids):
                dead = stack.dead_child()
                if dead is not None:
                    raise RuntimeError(f"{dead.name} died:\n{dead.tail()}")
                phone_down = phones.dead() if phones is not None else None
                if phone_down is not None:
                    raise RuntimeError(phone_down)
                if time.monotonic() > deadline:
                    figures.check(False, f"no quiescence within {options.quiescence_timeout} s")
                    break
                time.sleep(1.0)
            # Deliveries are finished in the database just after the receiver answered.
            settled = time.monotonic() - fault_started - fault_seconds
            figures.say(f"quiescent {settled:.0f} s after the faults")
            if phones is not None:
                # A killed dialer's calls end at the phones by themselves (bounded waits).
                time.sleep(2 * chaos_sip.PATIENCE_MS / 1000 + 2)
                phones.stop()
            check_invariants(stack, queues, options, receiver.log_path, hooked, figures, phones)
    finally:
        receiver.stop()
        if phones is not None:
            phones.stop()
    figures.say(f"wall time: {time.monotonic() - started:.0f} s")
    figures.say(
        "chaos: " + ("all invariants hold" if figures.ok else f"{len(figures.failures)} FAILED")
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--backend",
        choices=("sip", "simulated"),
        default="sip",
        help="sip: real SIP calls to sipp phones; simulated: phones inside the dialers",
    )
    parser.add_argument(
        "--tasks", type=int, default=None, help="tasks to load (sip 4000, simulated 20000)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds of faults (sip 120, simulated 240)"
    )
    parser.add_argument("--seed", type=int, default=ChaosOptions.seed, help="random seed")
    parser.add_argument("--tenants", type=int, default=ChaosOptions.tenants)
    parser.add_argument("--queues-per-tenant", type=int, default=ChaosOptions.queues_per_tenant)
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="logs and state (default: a temp dir)"
    )
    parser.add_argument(
        "--save", type=Path, default=None, help="also write the printed figures here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tasks, duration = SIZES[args.backend]
    options = ChaosOptions(
        tasks=args.tasks if args.tasks is not None else tasks,
        duration=args.duration if args.duration is not None else duration,
        backend=args.backend,
        seed=args.seed,
        tenants=args.tenants,
        queues_per_tenant=args.queues_per_tenant,
        state_dir=args.state_dir,
    )
    figures = run(options)
    if args.save is not None:
        command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
        args.save.write_text(f"$ {command.strip()}\n" + "\n".join(figures.lines) + "\n")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
