"""A throwaway Debian PostgreSQL server (the `postgresql` package), run as the postgres user.

Used where the embedded pgserver cannot serve: a server that must be stopped and started
again under a running stack (the tests of DATABASE_URL, `make chaos`). Debian's initdb
refuses to run as root, so the cluster belongs to the postgres system user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class DebianPostgresUnavailable(RuntimeError):
    """Not root, or Debian's PostgreSQL is not installed (`make system-deps` installs it)."""


@dataclass
class DebianPostgres:
    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin_dir / "pg_ctl"), "-D"]
            + [str(self.data_dir), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data_dir}"
        self.pg_ctl("-w", "-o", options, "-l", str(self.data_dir / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode "immediate" is a crash (no checkpoint, recovery at start)."""
        self.pg_ctl("-w", "-m", mode, "stop")

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def create_debian_postgres(port: int, *, max_connections: int = 100) -> DebianPostgres:
    """initdb a new cluster in a temporary folder and start it on 127.0.0.1:`port`."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if os.geteuid() != 0 or not initdbs:
        raise DebianPostgresUnavailable(
            "needs root and Debian's PostgreSQL (make system-deps installs it)"
        )
    data_dir = Path(tempfile.mkdtemp(prefix="pg-debian-"))
    shutil.chown(data_dir, "postgres", "postgres")
    server = DebianPostgres(Path(initdbs[-1]).parent, data_dir, port)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(server.bin_dir / "initdb"), "-D", str(data_dir)]
        + ["--auth=trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(f"\nmax_connections = {max_connections}\n")
    server.start()
    return server
