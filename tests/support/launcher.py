"""Start `python -m deploy.local.stack` (what `make run` runs) as a user would, on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from deploy.local.stack import ROOT
from tests.support.ports import free_port, free_port_block

READY_LINE = "callback-scheduler is ready"


def launcher_env(state_dir: Path, rest_port: int) -> dict[str, str]:
    """The environment of a launcher whose every port is free and chosen here: the defaults
    (50060.., 9464..) lie in the ephemeral range, where the session's other stack may listen."""
    return {
        **os.environ,
        "STATE_DIR": str(state_dir),
        "REST_PORT": str(rest_port),
        "ENVOY_ADMIN_PORT": str(free_port()),
        "API_GRPC_PORT": str(free_port()),
        "NATS_PORT": str(free_port()),
        "DISPATCHER_GRPC_PORT": str(free_port_block()),
        "DIALER_GRPC_PORT": str(free_port_block()),
        "NOTIFIER_GRPC_PORT": str(free_port_block()),
        "METRICS_PORT": str(free_port_block(40)),
    }


def start_launcher(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the launcher and return once it says it is ready."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.local.stack"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 90
    while READY_LINE not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the stack did not get ready")
        time.sleep(0.1)
    return process


def process_tree(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Every process the launcher started, with their own children (postgres backends)."""
    return psutil.Process(process.pid).children(recursive=True)


def still_running(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for the processes to end; return those still running then.

    A zombie counts as ended: it runs nothing and holds no port, only its exit status, until
    whoever adopted it reaps it.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    try:
        # is_running() compares the start time too: a reused pid is not the same process.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
