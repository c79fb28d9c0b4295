"""The embedded PostgreSQL: pgserver's binaries, run as a direct child of the launcher.

pgserver's own lifecycle (`get_server`) starts postgres through `pg_ctl`, detached in a session
of its own, and stops it only when the last pid listed in `pgdata/.handle_pids.json` lets go.
A launcher that was killed left its pid in that list for good, so from then on no launcher
stopped the server, not even on a clean Ctrl-C. Run in the foreground instead, postgres is a
child like the others: it gets the parent-death signal, is recorded in the ledger and is
stopped (fast shutdown) with the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# Fast shutdown: roll back open transactions, checkpoint, exit. (SIGTERM is the "smart" mode,
# which waits for every client to disconnect first.)
STOP_SIGNAL = signal.SIGINT


@dataclass(frozen=True)
class EmbeddedPostgres:
    """How to run the server of one data folder."""

    argv: list[str]
    # The system user postgres runs as (it refuses root); None: this user.
    user: str | None
    socket_dir: Path

    def uri(self, database: str) -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"


def prepare(pgdata: Path) -> EmbeddedPostgres:
    """Create the cluster if the folder has none yet; return how to run it.

    pgserver reads the runtime dir (XDG_RUNTIME_DIR) when imported: set it before calling.
    """
    # pgserver's helpers: the user, folder permissions and socket path rules it would apply.
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        find_suitable_socket_dir,
    )

    pgdata.mkdir(exist_ok=True)
    user = None
    if os.geteuid() == 0:
        import pwd
        import stat

        user = "pgserver"
        ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "-U", "postgres"]
            + ["--auth=trust", "--auth-local=trust", "--encoding=utf8"],
            check=True,
            capture_output=True,
            user=user,
        )
    socket_dir = find_suitable_socket_dir(pgdata, PostgresServer.runtime_path)
    if user is not None and socket_dir != pgdata:
        ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata), "-k", str(socket_dir)]
    # Unix socket only: no TCP port to collide with another server.
    argv += ["-c", "listen_addresses="]
    return EmbeddedPostgres(argv, user, socket_dir)


def stop_leftover(pgdata: Path, timeout: float = 30.0) -> int | None:
    """Stop a postgres still serving `pgdata` that no launcher owns (one `pg_ctl` detached
    before this launcher ran postgres itself, or one whose ledger was lost); return its pid.

    postmaster.pid names the server; its start time guards against a reused pid. A stale file
    (its server gone) is removed: postgres would refuse to start if the pid now belongs to an
    unrelated process.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, started = int(lines[0]), int(lines[2])
    except (OSError, ValueError, IndexError):
        return None
    try:
        process = psutil.Process(pid)
        ours = process.name() == "postgres" and abs(process.create_time() - started) < 2
    except psutil.Error:
        ours = False
    if not ours:
        pid_file.unlink(missing_ok=True)
        return None
    process.send_signal(STOP_SIGNAL)
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        process.kill()  # postgres recovers from this at the next start, like from a crash
    deadline = time.monotonic() + 5
    while pid_file.exists() and psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid
