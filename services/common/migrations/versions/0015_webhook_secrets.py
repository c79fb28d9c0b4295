"""webhook_secrets: per-tenant webhook signing secrets, random and versioned

Until now each client's secret was HMAC(NOTIFIER_SIGNING_KEY, client_id): one client's
could not be rotated alone. Clients without a row keep that secret as their version 1 (no
row is written here: receivers see no change on upgrade); the first rotation stores it as
version 1, retiring at the end of its overlap, beside a random version 2.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 07:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("retires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("version >= 1", name=op.f("ck_webhook_secrets_version")),
        sa.PrimaryKeyConstraint("client_id", "version", name=op.f("pk_webhook_secrets")),
    )


def downgrade() -> None:
    op.drop_table("webhook_secrets")
