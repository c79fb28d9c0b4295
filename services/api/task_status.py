"""The status the api shows for a task, and the list filter that matches it.

The dispatcher stores what it decides (scheduled, executed, delayed, finished, and
delayed_interval for a task held until its calling window opens). One more word is read off
the row as it is now, never stored: a waiting task that is due in a switched-on queue is
`delayed_concurrent_task`, held back by its queue's concurrent_task_limit or a tenant quota
(the dispatcher claims a task before it is due, within its lookahead, so a due task still
waiting is one it had no room for). Derived at read time, it is right whenever it is read and
costs the claims no write; a queue switched off shows its tasks as they were stored.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, and_, case, exists, false, func, not_, select

from services.common.vocabulary import WAITING, TaskStatus


def _held_by_limit(tasks: Table, queues: Table) -> ColumnElement[bool]:
    queue_on = exists(select(1).where(queues.c.id == tasks.c.queue_id, queues.c.status == "on"))
    return and_(tasks.c.status.in_(WAITING), tasks.c.next_run_at <= func.now(), queue_on)


def shown_status(tasks: Table, queues: Table) -> ColumnElement[str]:
    """tasks.status as the api shows it (labelled `status`)."""
    return case(
        (_held_by_limit(tasks, queues), TaskStatus.DELAYED_CONCURRENT_TASK.value),
        else_=tasks.c.status,
    ).label("status")


def status_filter(tasks: Table, queues: Table, status: str) -> ColumnElement[bool]:
    """The tasks shown with `status`. Each keeps `tasks.status` in the predicate, so that the
    (queue_id, status, id) index still pages the list."""
    if status == TaskStatus.DELAYED_CONCURRENT_TASK:
        return _held_by_limit(tasks, queues)
    if status in WAITING:
        return and_(tasks.c.status == status, not_(_held_by_limit(tasks, queues)))
    if status in tuple(TaskStatus):
        return tasks.c.status == status
    return false()
