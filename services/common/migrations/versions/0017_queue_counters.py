"""queue counters: task_count, sched_task_count (queue_task_counts) and queues.last_call_at

Maintained by statement-level triggers on tasks with transition tables, in the transaction
of the write that changes them: one counter-row update per queue per statement (a bulk add
of 1,000 tasks updates its queue's row once), whoever writes (api, dispatcher, retention).
The counters live in a table of their own, not on the queue's row: the api's bulk add holds
the queue's row FOR SHARE, and the dispatcher's claim holds it FOR UPDATE; counting on that
row would make concurrent bulk adds of one queue wait for each other (and deadlock).

- task_count: the queue's tasks (deleted ones gone); sched_task_count: those not finished
  (still to run, or running: scheduled, delayed, executed). A claim (scheduled -> executed)
  changes neither, so the claim's statement touches no counter row.
- last_call_at: set by the claim (the only statement that sets status 'executed'), on the
  queue's row, which the claiming transaction already holds FOR UPDATE: no new lock, and the
  dialer's call-record transaction is untouched. The time is when the call is dialed: the
  attempt's due time, or the claim's if it was due already.

Multi-queue statements lock the counter rows in queue_id order first (the dispatcher ends
attempts of many queues in one statement, several dispatchers at once): no deadlock between
them. The functions are SECURITY DEFINER (owned by the schema owner) so that the services'
roles need no grant on the counters (services/common/db_roles.py).

The backfill counts every queue's tasks once (one scan of tasks, under the triggers' table
locks, so no write is missed or counted twice) and takes last_call_at from calls.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 13:45:00.000000
"""

# ruff: noqa: S608  # the SQL here is constant, joined from constant pieces
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Counter rows of the queues a statement touched, locked in id order before they change.
_LOCK_IN_ORDER = """
  PERFORM 1 FROM queue_task_counts
  WHERE queue_id IN (SELECT DISTINCT queue_id FROM {rows})
  ORDER BY queue_id FOR UPDATE;
"""
_LOCK_DELETED = _LOCK_IN_ORDER.replace("{rows}", "old_tasks")
_LOCK_UPDATED = _LOCK_IN_ORDER.replace("{rows}", "new_tasks")

FUNCTIONS = {
    "queue_counts_tasks_inserted": """
  INSERT INTO queue_task_counts AS c (queue_id, task_count, sched_task_count)
  SELECT queue_id, count(*), count(*) FILTER (WHERE status <> 'finished')
  FROM new_tasks GROUP BY queue_id ORDER BY queue_id
  ON CONFLICT (queue_id) DO UPDATE
  SET task_count = c.task_count + EXCLUDED.task_count,
      sched_task_count = c.sched_task_count + EXCLUDED.sched_task_count;
""",
    "queue_counts_tasks_deleted": _LOCK_DELETED
    + """
  UPDATE queue_task_counts c
  SET task_count = c.task_count - d.gone, sched_task_count = c.sched_task_count - d.sched
  FROM (SELECT queue_id, count(*) AS gone, count(*) FILTER (WHERE status <> 'finished') AS sched
        FROM old_tasks GROUP BY queue_id) d
  WHERE c.queue_id = d.queue_id;
""",
    "queue_counts_tasks_updated": """
  -- Claimed (scheduled or delayed -> executed: only the claim does it, holding the queue's
  -- row FOR UPDATE already): the queue's latest call. Other updates leave queues alone.
  UPDATE queues q SET last_call_at = greatest(q.last_call_at, x.at)
  FROM (SELECT n.queue_id, greatest(now(), max(n.next_run_at)) AS at
        FROM new_tasks n JOIN old_tasks o ON o.id = n.id
        WHERE n.status = 'executed' AND o.status <> 'executed'
        GROUP BY n.queue_id) x
  WHERE q.id = x.queue_id;
  -- Finished (or, never today, unfinished): sched_task_count.
  IF EXISTS (SELECT 1 FROM new_tasks WHERE status = 'finished')
     OR EXISTS (SELECT 1 FROM old_tasks WHERE status = 'finished') THEN
"""
    + _LOCK_UPDATED
    + """
    UPDATE queue_task_counts c SET sched_task_count = c.sched_task_count - d.finished
    FROM (SELECT queue_id, sum(finished) AS finished FROM (
            SELECT queue_id, count(*) AS finished FROM new_tasks
            WHERE status = 'finished' GROUP BY queue_id
            UNION ALL
            SELECT queue_id, -count(*) FROM old_tasks
            WHERE status = 'finished' GROUP BY queue_id) f
          GROUP BY queue_id) d
    WHERE c.queue_id = d.queue_id AND d.finished <> 0;
  END IF;
""",
}

TRIGGERS = {
    "queue_counts_tasks_inserted": "AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_tasks",
    "queue_counts_tasks_deleted": "AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_tasks",
    "queue_counts_tasks_updated": (
        # Every UPDATE: PostgreSQL allows no column list with transition tables.
        "AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks"
    ),
}


def upgrade() -> None:
    op.create_table(
        "queue_task_counts",
        sa.Column("queue_id", sa.BigInteger(), nullable=False),
        sa.Column("task_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("sched_task_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["queues.id"],
            name=op.f("fk_queue_task_counts_queue_id_queues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("queue_id", name=op.f("pk_queue_task_counts")),
    )
    op.add_column("queues", sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True))
    for name, body in FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path FROM CURRENT AS $$\nBEGIN\n{body}\n  RETURN NULL;\nEND $$"
        )
    for name, when in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    # After the triggers: their table locks (SHARE ROW EXCLUSIVE on tasks) keep writers out
    # until this transaction commits, so the backfill and the triggers never overlap.
    op.execute("""
        INSERT INTO queue_task_counts (queue_id, task_count, sched_task_count)
        SELECT queue_id, count(*), count(*) FILTER (WHERE status <> 'finished')
        FROM tasks GROUP BY queue_id
    """)
    op.execute("""
        UPDATE queues q SET last_call_at = c.at
        FROM (SELECT queue_id, max(started_at) AS at FROM calls
              WHERE dialed_at IS NOT NULL GROUP BY queue_id) c
        WHERE q.id = c.queue_id
    """)


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON tasks")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_column("queues", "last_call_at")
    op.drop_table("queue_task_counts")
