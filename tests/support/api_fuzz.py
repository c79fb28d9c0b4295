"""schemathesis against a running stack, through Envoy, with valid tokens.

Used by tests/e2e/test_openapi_fuzz.py (a few hundred requests in `make test`) and by
bench/fuzz_api.py (`make fuzz`, >= 10,000). Every operation of deploy/openapi/scheduler.yaml
gets generated requests, valid ones (positive) and invalid ones (negative), and each response
must pass schemathesis' checks: no 5xx, a documented status code and content type, and a body
that conforms to the document's schema for that status.

Generated requests are aimed at real data, or they would mostly earn a 403 or a 404: most
name the token's own client (or `@me`) and ids of queues, tasks and calls that exist. Some
name another client, or another client's queue, and must not see it (403 / 404).

Fuzzed queues are never switched on: a body asking for `"status": "on"` is sent as "off".
Tasks with random webhook URLs therefore never run, and the stack stays idle (and off the
network) however many tasks the fuzzer adds; the dispatch path is covered by other tests.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case as _Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local.stack import ROOT

DOCUMENT = ROOT / "deploy" / "openapi" / "scheduler.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Queues, tasks and intervals of the fuzzing client that generated requests aim at.
QUEUES = 3
INTERVALS = 2
TASKS_PER_QUEUE = 5
# An answering phone of the test stacks' simulated backend.
PHONE = "+15550000100"
MAX_EXAMPLES_SHOWN = 20

Case = _Case[Any]


@dataclass
class Report:
    """What a run did and what it found."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    schema_failures: list[str] = field(default_factory=list)
    tenancy_leaks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        return self.server_errors + self.schema_failures + self.tenancy_leaks

    def summary(self) -> str:
        lines = [
            f"{self.requests} requests in {self.seconds:.1f} s; statuses "
            + ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())),
            f"5xx: {len(self.server_errors)}, schema failures: {len(self.schema_failures)}, "
            f"tenancy leaks: {len(self.tenancy_leaks)}",
        ]
        lines += self.failures[:MAX_EXAMPLES_SHOWN]
        return "\n".join(lines)


class World:
    """Real resources of the fuzzing client (and of another client), kept stocked."""

    def __init__(self, rest_url: str, own: str, own_token: str, other: str, other_token: str):
        self.own = own
        self.other = other
        self._api = httpx.Client(
            base_url=rest_url, headers={"Authorization": f"Bearer {own_token}"}, timeout=30
        )
        self.queues: dict[int, list[int]] = {}
        for _ in range(QUEUES):
            self.add_queue()
        self.intervals = [self._create_interval(self._api, own) for _ in range(INTERVALS)]
        with httpx.Client(
            base_url=rest_url, headers={"Authorization": f"Bearer {other_token}"}, timeout=30
        ) as other_api:
            self.other_queue = self._create_queue(other_api, other)
            self.other_tasks = self._create_tasks(other_api, other, self.other_queue)
            self.other_interval = self._create_interval(other_api, other)
        self.cdrs = self._finished_calls()

    def close(self) -> None:
        self._api.close()

    @staticmethod
    def _create_queue(api: httpx.Client, client: str, status: str = "off") -> int:
        reply = api.post(f"/client/{client}/task_scheduler/", json={"status": status})
        reply.raise_for_status()
        return int(reply.json()["id"])

    @staticmethod
    def _create_interval(api: httpx.Client, client: str) -> int:
        body = {"timezone": "Europe/Berlin", "conditions": [{"start_time": "09:00:00"}]}
        reply = api.post(f"/client/{client}/interval/", json=body)
        reply.raise_for_status()
        return int(reply.json()["id"])

    @staticmethod
    def _create_tasks(api: httpx.Client, client: str, queue: int) -> list[int]:
        tasks = [{"a_number": PHONE, "b_number": PHONE} for _ in range(TASKS_PER_QUEUE)]
        reply = api.post(f"/client/{client}/task_scheduler/{queue}/tasks/", json={"tasks": tasks})
        reply.raise_for_status()
        return [int(task["id"]) for task in reply.json()]

    def add_queue(self) -> None:
        queue = self._create_queue(self._api, self.own)
        self.queues[queue] = self._create_tasks(self._api, self.own, queue)

    def _finished_calls(self, timeout: float = 30.0) -> list[str]:
        """Run a few callbacks to the end, for call ids that exist; then switch their queue off."""
        queue = self._create_queue(self._api, self.own, status="on")
        self._create_tasks(self._api, self.own, queue)
        deadline = time.monotonic() + timeout
        while True:
            tasks = self._api.get(f"/client/{self.own}/task_scheduler/{queue}/task/").json()
            if all(task["status"] == "finished" for task in tasks):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the fuzzer's callbacks did not finish: {tasks}")
            time.sleep(0.1)
        self._api.put(f"/client/{self.own}/task_scheduler/{queue}", json={"status": "off"})
        return [task["cdr"] for task in tasks]

    def forget(self, params: dict[str, Any]) -> None:
        """A DELETE of one of ours succeeded: stop aiming at it (and restock queues and
        intervals)."""
        interval = params.get("interval_id")
        if interval in self.intervals:
            self.intervals.remove(interval)
            self.intervals.append(self._create_interval(self._api, self.own))
            return
        queue, task = params.get("scheduler_id"), params.get("task_id")
        if queue not in self.queues:
            return
        if task is None:
            del self.queues[queue]
            self.add_queue()
        elif task in self.queues[queue]:
            self.queues[queue].remove(task)


# How a request is aimed: whose client, and whether to swap in a real queue, task or call.
Aim = tuple[str, int, int, int, int, bool, int]
AIMS: st.SearchStrategy[Aim] = st.tuples(
    st.sampled_from(["own"] * 6 + ["me"] * 2 + ["other", "generated"]),
    st.integers(0, 9),
    st.integers(0, 2**16),
    st.integers(0, 9),
    st.integers(0, 2**16),
    st.booleans(),
    st.integers(0, 2**16),
)


def _is_id(value: Any) -> bool:
    """A generated id that is valid (negative cases with other types are left alone)."""
    if isinstance(value, str):
        return value.isascii() and value.isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def _aim(case: Case, aim: Aim, world: World) -> None:
    """Point a generated request at real data most of the time (see the module docstring).

    The pools change as the run deletes and restocks, while hypothesis wants the same draws
    whatever happens outside: every choice is drawn up front, as numbers (`aim`), and applied
    to the pools as they are.
    """
    whose, queue_pick, queue_index, task_pick, task_index, call_pick, call_index = aim
    params = case.path_parameters or {}
    if "client_id" in params and whose != "generated":
        params["client_id"] = {"own": world.own, "me": "@me", "other": world.other}[whose]
    queue = params.get("scheduler_id")
    if _is_id(queue):
        if queue_pick < 6 and world.queues:
            ours = sorted(world.queues)
            queue = params["scheduler_id"] = ours[queue_index % len(ours)]
        elif queue_pick == 6:
            queue = params["scheduler_id"] = world.other_queue
    if _is_id(params.get("task_id")) and task_pick < 7:
        tasks = world.queues.get(queue, world.other_tasks) if isinstance(queue, int) else []
        if tasks:
            params["task_id"] = tasks[task_index % len(tasks)]
    interval = params.get("interval_id")
    if _is_id(interval):
        if queue_pick < 6 and world.intervals:
            params["interval_id"] = world.intervals[queue_index % len(world.intervals)]
        elif queue_pick == 6:
            params["interval_id"] = world.other_interval
    if isinstance(case.body, dict) and _is_id(case.body.get("interval_id")) and task_pick < 5:
        # A queue's calling window: mostly one of ours, sometimes the other client's.
        window: int = world.intervals[task_index % len(world.intervals)] if world.intervals else 0
        case.body["interval_id"] = world.other_interval if task_pick == 0 else window
    if isinstance(params.get("call_uuid"), str) and call_pick:
        params["call_uuid"] = world.cdrs[call_index % len(world.cdrs)]
    if isinstance(case.body, dict) and case.body.get("status") == "on":
        case.body["status"] = "off"


def _describe(case: Case, response: Response | None, error: str) -> str:
    text = "" if response is None else response.content[:300].decode(errors="replace")
    reply = "" if response is None else f" -> {response.status_code} {text!r}"
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    return (
        f"{case.method} {case.formatted_path} query={case.query!r} headers={headers!r} "
        f"body={str(case.body)[:300]!r}{reply}: {error[:500]}"
    )


def run(
    rest_url: str,
    *,
    own: str,
    own_token: str,
    other: str,
    other_token: str,
    examples: int,
    coverage: bool = True,
    random_seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """schemathesis' coverage cases (boundary values of every parameter and field, each
    valid and invalid), then `examples` generated requests per operation and mode."""
    schema = schemathesis.openapi.from_path(DOCUMENT)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"{DOCUMENT} has an invalid operation: {result.err()}"
        operations.append(result.ok())
    report = Report()
    world = World(rest_url, own, own_token, other, other_token)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {own_token}"}
    chooser = random.Random(random_seed)
    started = time.monotonic()

    def done(label: str, before: int) -> None:
        report.by_operation[label] = report.requests - before
        if progress is not None:
            elapsed = time.monotonic() - started
            progress(f"{label}: {report.requests - before} requests ({elapsed:.0f} s)")

    try:
        for operation in operations if coverage else []:
            before = report.requests
            for case in schema.iter_coverage_cases(
                operation,
                generation_modes=list(MODES),
                generation_config=schema.config.generation_for(operation=operation),
            ):
                _aim(case, _random_aim(chooser), world)
                _send(case, session, rest_url, headers, world, report)
            done(f"{operation.method.upper()} {operation.path} (coverage)", before)
        for operation in operations if examples > 0 else []:
            for mode in MODES:

                @settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    # Failures are collected, not raised: nothing to shrink or replay.
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode), aim=AIMS)
                def exercise(case: Case, aim: Aim) -> None:
                    _aim(case, aim, world)
                    _send(case, session, rest_url, headers, world, report)

                if random_seed is not None:
                    exercise = seed(random_seed)(exercise)
                before = report.requests
                exercise()
                done(f"{operation.method.upper()} {operation.path} ({mode.value})", before)
    finally:
        report.seconds = time.monotonic() - started
        session.close()
        world.close()
    return report


def _random_aim(chooser: random.Random) -> Aim:
    """An Aim for the coverage cases, which hypothesis does not draw."""
    return (
        chooser.choice(["own"] * 6 + ["me"] * 2 + ["other", "generated"]),
        chooser.randrange(10),
        chooser.randrange(2**16),
        chooser.randrange(10),
        chooser.randrange(2**16),
        chooser.random() < 0.5,
        chooser.randrange(2**16),
    )


def _send(
    case: Case,
    session: requests.Session,
    rest_url: str,
    headers: dict[str, str],
    world: World,
    report: Report,
) -> None:
    try:
        response = case.call(base_url=rest_url, session=session, headers=headers, timeout=60)
    except requests.RequestException as err:
        report.requests += 1
        report.server_errors.append(_describe(case, None, f"transport error: {err}"))
        return
    report.requests += 1
    report.statuses[response.status_code] += 1
    if response.status_code >= 500:
        report.server_errors.append(_describe(case, response, "server error"))
        return
    try:
        case.validate_response(response, checks=CHECKS)
    except Exception as err:  # schemathesis' check failures (an AssertionError group)
        report.schema_failures.append(_describe(case, response, str(err)))
    params = case.path_parameters or {}
    if response.status_code == 200 and params.get("client_id") not in (world.own, "@me"):
        report.tenancy_leaks.append(_describe(case, response, "another client's path answered"))
    if response.status_code == 200 and params.get("scheduler_id") == world.other_queue:
        report.tenancy_leaks.append(_describe(case, response, "another client's queue answered"))
    if response.status_code == 200 and params.get("interval_id") == world.other_interval:
        report.tenancy_leaks.append(_describe(case, response, "another client's interval answered"))
    body = case.body if isinstance(case.body, dict) else {}
    if response.status_code == 200 and body.get("interval_id") == world.other_interval:
        report.tenancy_leaks.append(_describe(case, response, "another client's interval named"))
    if response.status_code == 200 and case.method == "DELETE":
        world.forget(params)


def write_failures(report: Report, path: Path) -> None:
    """Every failure, one per line (the summary shows the first few)."""
    path.write_text("\n".join(report.failures) + "\n")
