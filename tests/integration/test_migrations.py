"""Alembic: the migrations build exactly the schema the models define."""

from __future__ import annotations

import psycopg

from tests.support.postgres import alembic


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
