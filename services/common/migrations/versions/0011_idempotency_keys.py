"""idempotency keys: a retried POST with the same Idempotency-Key replays its first response;
indexes to find a queue's tasks by number (A or B)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 16:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("client_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )
    op.create_index(op.f("ix_tasks_queue_id_a_number"), "tasks", ["queue_id", "a_number"])
    op.create_index(op.f("ix_tasks_queue_id_b_number"), "tasks", ["queue_id", "b_number"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tasks_queue_id_b_number"), table_name="tasks")
    op.drop_index(op.f("ix_tasks_queue_id_a_number"), table_name="tasks")
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
