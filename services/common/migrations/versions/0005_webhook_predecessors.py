"""webhook deliveries wait for their predecessors

A task's events can reach the notifier out of order (one held unacknowledged by a notifier
that died is redelivered after the ack wait, later ones arrive at once). Each delivery now
knows how many earlier events of its task have a URL, and waits until all are queued; the
task-order index covers every delivery, not only pending ones, for that count.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 23:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_deliveries",
        sa.Column("predecessors", sa.Integer(), server_default="0", nullable=False),
    )
    op.drop_index(
        "ix_webhook_deliveries_task_order",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_task_order",
        "webhook_deliveries",
        ["client_id", "task_id", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_task_order", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_task_order",
        "webhook_deliveries",
        ["client_id", "task_id", "seq"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_column("webhook_deliveries", "predecessors")
