"""tenants: quotas, SIP accounts, caller ids and destination rules per client

Until now every tenant could place calls on any SIP account (keyed by extension_id alone),
show any caller id, call any number and use as much of the dialers as its queues' limits
allowed. The operator now keeps, per client: its quotas (NULL: the default), the SIP
accounts it owns by extension_id, the caller ids it owns and its destination rules. The
tenants row is also the dispatcher's lock for a tenant's claims (exact in-progress quota)
and holds its calls-per-second token bucket; tenant_usage counts its stored tasks.

Existing clients get a tenants row and their stored tasks counted, so the quotas hold from
the first request after the upgrade.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 16:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("max_in_progress", sa.Integer(), nullable=True),
        sa.Column("calls_per_second", sa.Double(), nullable=True),
        sa.Column("max_stored_tasks", sa.BigInteger(), nullable=True),
        sa.Column("rate_tokens", sa.Double(), nullable=True),
        sa.Column("rate_refilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("max_in_progress >= 0", name=op.f("ck_tenants_max_in_progress")),
        sa.CheckConstraint("calls_per_second > 0", name=op.f("ck_tenants_calls_per_second")),
        sa.CheckConstraint("max_stored_tasks >= 0", name=op.f("ck_tenants_max_stored_tasks")),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "tenant_usage",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("stored_tasks", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_tenant_usage")),
    )
    op.create_table(
        "tenant_sip_accounts",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("extension_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("extension_id >= 0", name=op.f("ck_tenant_sip_accounts_extension_id")),
        sa.PrimaryKeyConstraint("client_id", "extension_id", name=op.f("pk_tenant_sip_accounts")),
    )
    op.create_table(
        "tenant_caller_ids",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "number", name=op.f("pk_tenant_caller_ids")),
    )
    op.create_table(
        "tenant_destination_rules",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("allow", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "prefix", name=op.f("pk_tenant_destination_rules")),
    )
    op.create_index(
        "ix_tasks_executed_by_client",
        "tasks",
        ["client_id"],
        postgresql_where=sa.text("status = 'executed'"),
    )
    op.create_index(
        "ix_calls_of_deleted_tasks_by_client",
        "calls",
        ["client_id", "started_at"],
        postgresql_where=sa.text("task_deleted"),
    )
    op.execute("INSERT INTO tenants (client_id) SELECT DISTINCT client_id FROM queues")
    op.execute("""
        INSERT INTO tenant_usage (client_id, stored_tasks)
        SELECT client_id, count(*) FROM tasks GROUP BY client_id
    """)


def downgrade() -> None:
    op.drop_index("ix_calls_of_deleted_tasks_by_client", table_name="calls")
    op.drop_index("ix_tasks_executed_by_client", table_name="tasks")
    op.drop_table("tenant_destination_rules")
    op.drop_table("tenant_caller_ids")
    op.drop_table("tenant_sip_accounts")
    op.drop_table("tenant_usage")
    op.drop_table("tenants")
