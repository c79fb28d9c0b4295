"""tasks.status 'delayed_interval': a due task held until its calling window opens

- status widens to 32 characters (in PostgreSQL a longer varchar is a catalog change, no
  rewrite of the table) and its CHECK admits the new word;
- ix_tasks_waiting (the claim's index) covers it: a held task waits, with next_run_at at the
  window's opening, and is claimed then like any other waiting task.

`delayed_concurrent_task` is never stored: the api shows it for a waiting task that is due in
a switched-on queue (services/api/task_status.py).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 19:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels = None
depends_on = None

_OLD_WAITING = "status IN ('scheduled', 'delayed')"
_NEW_WAITING = "status IN ('scheduled', 'delayed', 'delayed_interval')"
_OLD_CHECK = "status IN ('scheduled', 'executed', 'delayed', 'finished')"
_NEW_CHECK = "status IN ('scheduled', 'executed', 'delayed', 'finished', 'delayed_interval')"


def _statuses(check: str, waiting: str, length: int) -> None:
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
    op.drop_index("ix_tasks_waiting", table_name="tasks")
    op.alter_column("tasks", "status", type_=sa.String(length), existing_nullable=False)
    op.create_check_constraint(op.f("ck_tasks_status"), "tasks", check)
    op.create_index(
        "ix_tasks_waiting",
        "tasks",
        ["queue_id", "next_run_at", "id"],
        postgresql_where=sa.text(waiting),
    )


def upgrade() -> None:
    _statuses(_NEW_CHECK, _NEW_WAITING, 32)


def downgrade() -> None:
    # Held tasks wait as they did before they were held: due now.
    op.execute(
        "UPDATE tasks SET status = CASE WHEN attempts = 0 THEN 'scheduled' ELSE 'delayed' END "
        "WHERE status = 'delayed_interval'"
    )
    _statuses(_OLD_CHECK, _OLD_WAITING, 9)
