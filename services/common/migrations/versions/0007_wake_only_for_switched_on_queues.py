"""new tasks wake the dispatchers only for switched-on queues, and say when they fall due

The INSERT trigger on tasks used to notify every dispatcher for every statement, and each
woken dispatcher ran a full pass over the database. At 100 single-task POSTs a second the
two dispatchers burned 3.7 ms of CPU each per POST, mostly for tasks of switched-off queues
or tasks due hours later, and the api's latency went up to seconds on a 2-core machine.

Now the notification is sent only if a new task belongs to a switched-on queue, and its
payload is `due_in:<seconds>` until the earliest of them falls due (by the database clock):
a dispatcher sleeping until an earlier time keeps sleeping, without a query.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 04:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_TASKS_FUNCTION = """
CREATE FUNCTION callback_scheduler_wake_for_new_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    due_in double precision;
BEGIN
    SELECT EXTRACT(EPOCH FROM min(n.next_run_at) - now()) INTO due_in
    FROM new_tasks n JOIN queues q ON q.id = n.queue_id
    WHERE q.status = 'on';
    IF due_in IS NOT NULL THEN
        PERFORM pg_notify('callback_scheduler_wake', 'due_in:' || due_in);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER tasks_insert_wake ON tasks")
    op.execute(NEW_TASKS_FUNCTION)
    op.execute(
        "CREATE TRIGGER tasks_insert_wake AFTER INSERT ON tasks "
        "REFERENCING NEW TABLE AS new_tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION callback_scheduler_wake_for_new_tasks()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_insert_wake ON tasks")
    op.execute("DROP FUNCTION callback_scheduler_wake_for_new_tasks()")
    op.execute(
        "CREATE TRIGGER tasks_insert_wake AFTER INSERT ON tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION callback_scheduler_wake()"
    )
