"""DATABASE_URL: the stack runs on any PostgreSQL (here Debian's, a second local server),
answers 503 while it is down and recovers by itself when it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.local.debian_postgres import (
    DebianPostgres,
    DebianPostgresUnavailable,
    create_debian_postgres,
)
from deploy.local.stack import Stack
from tests.support.ports import free_port
from tests.support.stacks import StateDirFactory, stack_settings


@pytest.fixture(scope="module")
def debian_postgres() -> Iterator[DebianPostgres]:
    try:
        server = create_debian_postgres(free_port())
    except DebianPostgresUnavailable as err:
        pytest.fail(str(err))
    yield server
    server.stop()
    server.remove()


@pytest.fixture(scope="module")
def external_stack(
    debian_postgres: DebianPostgres, make_state_dir: StateDirFactory
) -> Iterator[Stack]:
    state_dir = make_state_dir("external")
    stack = Stack(
        stack_settings(state_dir, database_url=debian_postgres.url), log_dir=state_dir / "logs"
    )
    stack.start()
    yield stack
    stack.stop()


def client_for(stack: Stack, client_id: str) -> httpx.Client:
    token = stack.token(client_id)
    return httpx.Client(
        base_url=stack.rest_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_works_on_the_database_named_by_database_url(external_stack: Stack) -> None:
    assert external_stack.database_url.startswith("postgresql://postgres@127.0.0.1:")
    with client_for(external_stack, "ext") as api:
        queue = api.post("/client/ext/task_scheduler/", json={"name": "on debian"}).json()
        assert api.get(f"/client/ext/task_scheduler/{queue['id']}").json() == queue


def test_database_down_is_503_and_recovers_without_a_restart(
    external_stack: Stack, debian_postgres: DebianPostgres
) -> None:
    with client_for(external_stack, "outage") as api:
        queue = api.post("/client/outage/task_scheduler/", json={"name": "before"}).json()
        debian_postgres.stop()
        try:
            for _ in range(3):
                down = api.get(f"/client/outage/task_scheduler/{queue['id']}")
                assert down.status_code == 503, down.text
                assert down.json()["code"] == 14  # google.rpc.Code UNAVAILABLE
                refused = api.post("/client/outage/task_scheduler/", json={"name": "lost?"})
                assert refused.status_code == 503, refused.text
        finally:
            debian_postgres.start()
        # The pool drops dead connections on first use: recovery needs no restart.
        deadline = time.monotonic() + 30
        while (back := api.get(f"/client/outage/task_scheduler/{queue['id']}")).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
        assert back.json() == queue
        names = [q["name"] for q in api.get("/client/outage/task_scheduler/").json()]
        assert names == ["before"]


def test_postgresql_restart_mid_run_loses_no_task(
    external_stack: Stack, debian_postgres: DebianPostgres
) -> None:
    """Dispatchers, dialers and the notifier ride out a PostgreSQL restart: every task ends."""
    count = 20
    with client_for(external_stack, "pgdown") as api:
        queue = api.post(
            "/client/pgdown/task_scheduler/", json={"status": "on", "concurrent_task_limit": 3}
        ).json()
        tasks = [
            {"a_number": f"+1600000{i:04d}", "b_number": "+16000009999", "try_count": 3}
            for i in range(count)
        ]
        path = f"/client/pgdown/task_scheduler/{queue['id']}"
        assert api.post(f"{path}/tasks/", json={"tasks": tasks}).status_code == 200

        def finished() -> int:
            reply = api.get(f"{path}/task/")
            if reply.status_code != 200:
                return -1
            return sum(t["status"] == "finished" for t in reply.json())

        deadline = time.monotonic() + 30
        while finished() < 3:
            assert time.monotonic() < deadline, "no task finished before the restart"
            time.sleep(0.05)
        debian_postgres.stop()
        time.sleep(1.0)  # PostgreSQL stays down for a while, as in a real restart
        debian_postgres.start()
        deadline = time.monotonic() + 90
        while finished() != count:
            assert time.monotonic() < deadline, api.get(f"{path}/task/").text
            time.sleep(0.2)
        final = api.get(f"{path}/task/").json()
    assert {t["finish_result"] for t in final} == {"success"}, final
