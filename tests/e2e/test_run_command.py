"""`make run`'s entry point: starts everything, serves, stops every process on Ctrl-C or
SIGTERM, and keeps the data for the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from deploy.local.keys import mint_token
from deploy.local.stack import ROOT
from tests.conftest import StateDirFactory, free_port, free_port_block

READY_LINE = "callback-scheduler is ready"


@contextmanager
def running_stack(
    state_dir: Path, rest_port: int, log: Path, stop_signal: signal.Signals
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "STATE_DIR": str(state_dir),
        "REST_PORT": str(rest_port),
        "ENVOY_ADMIN_PORT": str(free_port()),
        "API_GRPC_PORT": str(free_port()),
        "NATS_PORT": str(free_port()),
        # Every port is free and chosen here: the defaults (50060.., 9464..) lie in the
        # ephemeral range, where the session's other stack may already listen.
        "DISPATCHER_GRPC_PORT": str(free_port_block()),
        "DIALER_GRPC_PORT": str(free_port_block()),
        "NOTIFIER_GRPC_PORT": str(free_port_block()),
        "METRICS_PORT": str(free_port_block(40)),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.local.stack"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 90
        while READY_LINE not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the stack did not get ready"
            time.sleep(0.1)
        yield process
    finally:
        # A stack that exited on its own has no children left to find: its log says why.
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(stop_signal)
        exit_code = process.wait(60)
        _gone, alive = psutil.wait_procs(children, timeout=15)
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
        assert "token (demo):" in (tmp_path / "first.log").read_text()
        headers = {"Authorization": f"Bearer {mint_token(state_dir, 'keeper')}"}
        queue = httpx.post(
            f"{base}/client/keeper/task_scheduler/", json={"name": "kept"}, headers=headers
        ).json()
        tasks_url = f"{base}/client/keeper/task_scheduler/{queue['id']}/tasks/"
        body = {"tasks": [{"a_number": "101", "b_number": "102"}]}
        task = httpx.post(tasks_url, json=body, headers=headers).json()[0]

    with running_stack(state_dir, rest_port, tmp_path / "second.log", signal.SIGTERM):
        got_queue = httpx.get(f"{base}/client/keeper/task_scheduler/{queue['id']}", headers=headers)
        assert got_queue.json() == queue
        got_task = httpx.get(
            f"{base}/client/keeper/task_scheduler/{queue['id']}/task/{task['id']}",
            headers=headers,
        )
        assert got_task.json() == task
