"""The integration tier's PostgreSQL: one server per test session (the embedded one that
`make run` uses, or the server DATABASE_URL names), a database migrated once to serve as a
template, and a fresh copy of it per test.

A copy by `CREATE DATABASE ... TEMPLATE` is a file copy inside the server; it replaces an
Alembic run (a Python process importing the models and replaying every revision) per test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from deploy.local import embedded_postgres
from deploy.local.lifeline import with_lifeline
from deploy.local.stack import BIN, ROOT

START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class PostgresServer:
    """A server the tests may create and drop databases on, reached through `admin_url` (a
    URL of a database that is never copied: a template must have no other sessions)."""

    admin_url: str

    @classmethod
    def at(cls, database_url: str) -> PostgresServer:
        """The server of `database_url` (a DATABASE_URL; its database is the admin one)."""
        plain = make_url(database_url).set(drivername="postgresql")  # psycopg's own scheme
        return cls(plain.render_as_string(hide_password=False))

    def url(self, database: str) -> str:
        """The URL of another database on the same server, as the same user."""
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def create_database(self, *, template: str | None = None, prefix: str = "test") -> str:
        """A new database (a copy of `template`, else empty); its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed may have left a session open (an engine not disposed).
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The project's `alembic` command on `database_url`, as an operator runs it."""
    return subprocess.run(
        [str(Path(BIN) / "alembic"), *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def migrated_template(server: PostgresServer) -> str:
    """A new database with the schema at head (`alembic upgrade head`, once); its name."""
    name = server.create_database(prefix="template")
    upgrade = alembic(server.url(name), "upgrade", "head")
    if upgrade.returncode != 0:
        server.drop_database(name)
        raise RuntimeError(f"alembic upgrade head failed:\n{upgrade.stderr[-3000:]}")
    return name


@contextlib.contextmanager
def embedded_server(state_dir: Path) -> Iterator[PostgresServer]:
    """The embedded PostgreSQL (pgserver's binaries) on a Unix socket in `state_dir`, run as
    `make run` runs it: a direct child that gets a parent-death signal, stopped by a fast
    shutdown. pgserver reads XDG_RUNTIME_DIR when imported: set it before calling."""
    server = embedded_postgres.prepare(state_dir / "pgdata")
    with (state_dir / "postgres.log").open("ab") as log:
        process = subprocess.Popen(
            with_lifeline(server.argv, embedded_postgres.STOP_SIGNAL),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C of pytest reaches pytest only, which stops the server.
            start_new_session=True,
            user=server.user,
        )
    try:
        admin_url = server.uri("postgres")
        _wait_ready(admin_url, process, state_dir / "postgres.log")
        yield PostgresServer(admin_url)
    finally:
        process.send_signal(embedded_postgres.STOP_SIGNAL)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with psycopg.connect(url, connect_timeout=1):
                return
        except psycopg.OperationalError:
            pass
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres not ready after {START_TIMEOUT_SECONDS} s")
        time.sleep(0.05)
