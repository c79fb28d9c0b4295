"""tasks.finished_at, and the index the retention purge walks (finished tasks by age)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 18:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No rewrite: tasks finished before this revision get their time from the purge, in
    # small batches (services/dispatcher/housekeeping.py), not from one long UPDATE here.
    op.add_column("tasks", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    # Built without blocking writes to tasks (outside the migration's transaction).
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_tasks_finished",
            "tasks",
            ["finished_at"],
            postgresql_where=sa.text("status = 'finished'"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_tasks_finished", table_name="tasks", postgresql_concurrently=True)
    op.drop_column("tasks", "finished_at")
