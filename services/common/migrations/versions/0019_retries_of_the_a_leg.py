"""retries of the A leg: tasks.try_count_caller, try_again_pause_caller, caller_failures

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 19:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("try_count_caller", "try_again_pause_caller", "caller_failures")


def upgrade() -> None:
    # A constant default: PostgreSQL adds these without rewriting the table, and every
    # existing task keeps today's behaviour (0 = the A leg has no limit of its own).
    for name in COLUMNS:
        op.add_column("tasks", sa.Column(name, sa.Integer(), server_default="0", nullable=False))
    # The checks scan tasks once (under the lock ADD COLUMN holds already); rows read only
    # the default, which passes.
    op.create_check_constraint(
        op.f("ck_tasks_try_count_caller"), "tasks", "try_count_caller BETWEEN 0 AND 50"
    )
    op.create_check_constraint(
        op.f("ck_tasks_try_again_pause_caller"), "tasks", "try_again_pause_caller >= 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_tasks_try_again_pause_caller"), "tasks", type_="check")
    op.drop_constraint(op.f("ck_tasks_try_count_caller"), "tasks", type_="check")
    for name in reversed(COLUMNS):
        op.drop_column("tasks", name)
