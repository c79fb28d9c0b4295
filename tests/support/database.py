"""What a stack's database says, read as another client would: its clock and counters."""

from __future__ import annotations

from datetime import datetime

import psycopg

from deploy.local.stack import Stack


def db_now(stack: Stack) -> datetime:
    """The database clock, the one due times and calls.started_at are decided by."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def stored_tasks(stack: Stack, tenant: str) -> int:
    """The tenant's count of stored tasks (its quota's counter), as the database has it."""
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT stored_tasks FROM tenant_usage WHERE client_id = %s", (tenant,)
        ).fetchone()
    return int(row[0]) if row else 0
