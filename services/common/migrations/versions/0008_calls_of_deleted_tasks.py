"""calls.task_deleted: the calls a queue's limit counts besides its executed tasks are
found by a small index, and ending a call updates fewer indexes

A queue's callbacks in progress are its executed tasks plus the calls still going on for
tasks deleted mid-call. Those calls were found through an index of every call in progress
(`ix_calls_in_progress`), joined with tasks to keep the deleted ones: each claim scanned
all of the queue's calls in progress (20 ms with 1,700 of them), and the planner also chose
that index, bloated by dead entries during a burst, to look up calls by their uuid (a
batch of 400 ended calls took 415 ms). The API now marks the calls of a task it deletes,
and only those are indexed.

`ix_calls_client_id_call_uuid` goes too: the primary key finds a call by its uuid, and no
query lists a client's calls. Every insert and end of a call updated it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "calls",
        sa.Column("task_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.execute("""
        UPDATE calls c SET task_deleted = true
        WHERE c.result = 'in_progress' AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = c.task_id)
    """)
    op.create_index(
        "ix_calls_of_deleted_tasks",
        "calls",
        ["queue_id", "started_at"],
        postgresql_where=sa.text("task_deleted"),
    )
    op.drop_index("ix_calls_in_progress", table_name="calls")
    op.drop_index(op.f("ix_calls_client_id_call_uuid"), table_name="calls")


def downgrade() -> None:
    op.create_index(
        op.f("ix_calls_client_id_call_uuid"), "calls", ["client_id", "call_uuid"], unique=False
    )
    op.create_index(
        "ix_calls_in_progress",
        "calls",
        ["queue_id"],
        postgresql_where=sa.text("result = 'in_progress'"),
    )
    op.drop_index("ix_calls_of_deleted_tasks", table_name="calls")
    op.drop_column("calls", "task_deleted")
