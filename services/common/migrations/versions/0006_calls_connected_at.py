"""calls.connected_at: an attempt known to have connected A and B stays a success

The dispatcher announces `success` when the dialer reports A and B connected. If that
dialer then dies before reporting the end, the lease expiry used to count the attempt as
lost: a failed attempt after a `success` webhook, and A and B called again. The dispatcher
now notes the connection on the call.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 00:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "connected_at")
