"""Fixtures for tests that need a database of their own on the session's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

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


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    """A new database with the schema at head, that no service of the stack looks at."""
    upgrade = alembic(empty_database, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    return empty_database


async def add_queue(conn: AsyncConnection) -> int:
    """A switched-on queue of tenant `acme` (limit 10), for tests that write tasks in SQL."""
    queue = await conn.execute(
        text("""
            INSERT INTO queues (client_id, name, comment, status, concurrent_task_limit)
            VALUES ('acme', 'q', '', 'on', 10) RETURNING id
        """)
    )
    return int(queue.scalar_one())
