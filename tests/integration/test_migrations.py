"""Alembic: the migrations build exactly the schema the models define."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from deploy.local.stack import BIN, ROOT, Stack


@pytest.fixture
def empty_database(stack: Stack) -> Iterator[str]:
    """A new, empty database on the session's PostgreSQL server."""
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    admin_url = stack.database_url.replace("/callback_scheduler?", "/postgres?")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield stack.database_url.replace("/callback_scheduler?", f"/{name}?")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(BIN) / "alembic"), *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_upgrade_head_on_empty_database_leaves_no_drift(empty_database: str) -> None:
    upgrade = alembic(empty_database, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    check = alembic(empty_database, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_downgrade_to_base_and_up_again(empty_database: str) -> None:
    for step in (("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head")):
        result = alembic(empty_database, *step)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(empty_database) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert {"queues", "tasks", "alembic_version"} <= tables
