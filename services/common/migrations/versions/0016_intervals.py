"""intervals: calling windows, and the queue's optional interval_id

A new table and a nullable column (instant: no rewrite of queues); existing queues have no
interval and stay always open. The foreign key (client_id, interval_id) -> intervals keeps a
queue to its own client's intervals and refuses to delete one in use.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intervals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("conditions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("id <= 4294967295", name=op.f("ck_intervals_id_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intervals")),
        sa.UniqueConstraint("client_id", "id", name=op.f("uq_intervals_client_id_id")),
    )
    op.add_column("queues", sa.Column("interval_id", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_queues_interval_id"), "queues", ["interval_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_queues_client_id_intervals"),
        "queues",
        "intervals",
        ["client_id", "interval_id"],
        ["client_id", "id"],
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_queues_client_id_intervals"), "queues", type_="foreignkey")
    op.drop_index(op.f("ix_queues_interval_id"), table_name="queues")
    op.drop_column("queues", "interval_id")
    op.drop_table("intervals")
