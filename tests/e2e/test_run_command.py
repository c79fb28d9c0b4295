"""`make run`'s entry point: starts everything, serves, stops every process on Ctrl-C or
SIGTERM, and keeps the data for the next start."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from deploy.local.keys import mint_token
from tests.support.launcher import launcher_env, process_tree, start_launcher, still_running
from tests.support.ports import free_port
from tests.support.stacks import StateDirFactory


@contextmanager
def running_stack(
    state_dir: Path, rest_port: int, log: Path, stop_signal: signal.Signals
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_launcher(launcher_env(state_dir, rest_port), log)
    try:
        yield process
    finally:
        # A stack that exited on its own has no children left to find: its log says why.
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        # The embedded PostgreSQL is among them: it runs as a child of the launcher.
        children = process_tree(process)
        process.send_signal(stop_signal)
        exit_code = process.wait(60)
        alive = still_running(children, timeout=60)
        for leftover in alive:
            leftover.kill()
        assert exit_code == 0, log.read_text(errors="replace")[-3000:]
        assert alive == [], f"processes left running after stop: {alive}"


def test_data_survives_a_restart_and_every_process_stops(
    tmp_path: Path, make_state_dir: StateDirFactory
) -> None:
    state_dir, rest_port = make_state_dir("restart"), free_port()
    base = f"http://127.0.0.1:{rest_port}"
    with running_stack(state_dir, rest_port, tmp_path / "first.log", signal.SIGINT):
        # The token printed for `demo` is in the log; any token from the same key works too.
        printed = (tmp_path / "first.log").read_text()
        assert "token (demo):" in printed
        # The console link: the page, and the demo token in its fragment.
        link = re.search(r"console: +(\S+)#token=(\S+) \(signs in as demo\)", printed)
        assert link is not None, printed
        assert link.group(1) == f"{base}/console/"
        assert "text/html" in httpx.get(link.group(1)).headers["content-type"]
        demo = {"Authorization": f"Bearer {link.group(2)}"}
        assert httpx.get(f"{base}/client/demo/task_scheduler/", headers=demo).status_code == 200
        headers = {"Authorization": f"Bearer {mint_token(state_dir, 'keeper')}"}
        queue = httpx.post(
            f"{base}/client/keeper/task_scheduler/", json={"name": "kept"}, headers=headers
        ).json()
        tasks_url = f"{base}/client/keeper/task_scheduler/{queue['id']}/tasks/"
        body = {"tasks": [{"a_number": "101", "b_number": "102"}]}
        task = httpx.post(tasks_url, json=body, headers=headers).json()[0]
        # Read back after the add: the queue's task counters now count the task.
        queue = httpx.get(
            f"{base}/client/keeper/task_scheduler/{queue['id']}", headers=headers
        ).json()
        assert (queue["task_count"], queue["sched_task_count"]) == (1, 1)

    with running_stack(state_dir, rest_port, tmp_path / "second.log", signal.SIGTERM):
        got_queue = httpx.get(f"{base}/client/keeper/task_scheduler/{queue['id']}", headers=headers)
        assert got_queue.json() == queue
        got_task = httpx.get(
            f"{base}/client/keeper/task_scheduler/{queue['id']}/task/{task['id']}",
            headers=headers,
        )
        assert got_task.json() == task
