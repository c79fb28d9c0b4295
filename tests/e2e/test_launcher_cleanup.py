"""`make run` cleans up after itself: nothing outlives a killed launcher, the next start stops
what an earlier one left, and a taken port gets one line that names it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from deploy.local import embedded_postgres
from deploy.local.ledger import LEDGER_FILE, Ledger, ProcessRecord, StateFolderBusy
from deploy.local.stack import ROOT, clean_up_leftovers
from tests.support.launcher import launcher_env, process_tree, start_launcher, still_running
from tests.support.ports import free_port
from tests.support.stacks import StateDirFactory, stack_settings


def wait_for_line(log: Path, line: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {line!r} in {log}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_process_and_the_next_start_succeeds(
    tmp_path: Path, make_state_dir: StateDirFactory
) -> None:
    state_dir = make_state_dir("killed")
    # One environment for every start: the same folder and the same ports each time.
    env = launcher_env(state_dir, free_port())

    first = start_launcher(env, tmp_path / "first.log")
    children = process_tree(first)
    assert {"postgres", "nats-server", "envoy"} <= {p.name() for p in children}
    first.kill()  # as an OOM kill or a closed terminal does
    first.wait()
    # Generous deadline: the services stop gracefully on their parent-death signal (~1 s here).
    assert still_running(children, timeout=60) == []

    # A script's SIGTERM, then SIGKILL before the graceful stop has finished.
    second = start_launcher(env, tmp_path / "second.log")
    children = process_tree(second)
    second.send_signal(signal.SIGTERM)
    wait_for_line(tmp_path / "second.log", "stopping callback-scheduler")
    second.kill()
    second.wait()
    assert still_running(children, timeout=60) == []

    # Started again on the same ports and folder; `make stop` ends it like Ctrl-C does.
    third = start_launcher(env, tmp_path / "third.log")
    children = process_tree(third)
    subprocess.run(
        [sys.executable, "-m", "deploy.local.stop"], cwd=ROOT, env=env, check=True, timeout=90
    )
    assert third.wait(60) == 0
    assert still_running(children, timeout=60) == []
    assert not (state_dir / LEDGER_FILE).exists()


def test_the_next_start_stops_what_the_ledger_says_was_left(
    make_state_dir: StateDirFactory,
) -> None:
    state_dir = make_state_dir("ledger")
    # A child that outlived its launcher (as one without a parent-death signal would).
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        # This test's own pid under another start time: a reused pid, which must be spared.
        reused = ProcessRecord("api", os.getpid(), started=0.0)
        left = {
            "launcher": asdict(ProcessRecord("launcher", 1, started=0.0)),
            "processes": [asdict(ProcessRecord.of("nats", orphan.pid)), asdict(reused)],
        }
        (state_dir / LEDGER_FILE).write_text(json.dumps(left))
        ledger = Ledger(state_dir)
        ledger.acquire()
        try:
            settings = stack_settings(state_dir, database_url="postgresql://unused")
            lines = clean_up_leftovers(ledger, settings)
        finally:
            ledger.release()
        assert orphan.wait(30) == -signal.SIGTERM
        assert lines == [f"stopping what an earlier launcher left running: nats (pid {orphan.pid})"]
    finally:
        orphan.kill()
        orphan.wait()


def test_a_postgres_detached_by_pg_ctl_is_stopped_by_the_next_start(
    make_state_dir: StateDirFactory,
) -> None:
    state_dir = make_state_dir("detached-postgres")
    pgdata = state_dir / "pgdata"
    server = embedded_postgres.prepare(pgdata)
    # As pgserver started it before the launcher ran postgres itself: pg_ctl, own session.
    options = f"-c listen_addresses= -k {server.socket_dir}"
    pg_ctl = str(Path(server.argv[0]).parent / "pg_ctl")
    log = str(pgdata / "log")  # where pgserver kept it; pgdata belongs to the server's user
    subprocess.run(
        [pg_ctl, "-D", str(pgdata), "-w", "-o", options, "-l", log, "start"],
        user=server.user,
        check=True,
        capture_output=True,
        timeout=60,
    )
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    ledger = Ledger(state_dir)
    ledger.acquire()
    try:
        lines = clean_up_leftovers(ledger, stack_settings(state_dir))
    finally:
        ledger.release()
    assert lines == [f"stopped a PostgreSQL (pid {postmaster.pid}) left running on {state_dir}"]
    assert still_running([postmaster], timeout=30) == []


def test_a_second_launcher_on_a_busy_state_folder_is_refused(
    make_state_dir: StateDirFactory,
) -> None:
    state_dir = make_state_dir("busy")
    first = Ledger(state_dir)
    first.acquire()
    first.save()
    with pytest.raises(StateFolderBusy, match=rf"launcher pid {os.getpid()}\b.*`make stop`"):
        Ledger(state_dir).acquire()
    first.release()
    second = Ledger(state_dir)
    second.acquire()  # free again once the first let go
    second.release()


@pytest.mark.parametrize("setting", ["NATS_PORT", "REST_PORT", "DISPATCHER_GRPC_PORT"])
def test_a_taken_port_gets_one_line_naming_port_program_and_setting(
    setting: str, make_state_dir: StateDirFactory
) -> None:
    env = launcher_env(make_state_dir("port"), free_port())
    port = int(env[setting])
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local.stack"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "\n" not in output, output
    assert f"port {port} " in output
    assert f"setting {setting})" in output
    assert f"pid {os.getpid()}:" in output  # this test holds the port
    assert f"{setting}=<free port> make run" in output
