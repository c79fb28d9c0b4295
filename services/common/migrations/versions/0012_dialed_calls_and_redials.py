"""calls.dialed_at and calls.dial_by: a call row is recorded before its due time and marked
once it is dialed; tasks.redials: dial requests of the current attempt that placed no call

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("dialed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("calls", sa.Column("dial_by", sa.DateTime(timezone=True), nullable=True))
    # Rows from before this revision were recorded as they were dialed.
    op.execute("UPDATE calls SET dialed_at = started_at")
    op.add_column("tasks", sa.Column("redials", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("tasks", "redials")
    op.drop_column("calls", "dial_by")
    op.drop_column("calls", "dialed_at")
