"""Every SQL statement the notifier runs, one function each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.models import WebhookAttempt, WebhookDelivery

WAKE_CHANNEL = "callback_scheduler_webhooks"

deliveries = cast(Table, WebhookDelivery.__table__)
attempts = cast(Table, WebhookAttempt.__table__)


async def add_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Queue deliveries (an event seen twice is queued once) and wake the senders."""
    if not rows:
        return
    await conn.execute(pg_insert(deliveries).on_conflict_do_nothing(), list(rows))
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})


# A delivery waits while an earlier event of the same task is still pending (in flight or
# waiting for a retry), so that a task's events arrive in order...
_FIRST_PENDING_OF_ITS_TASK = """
    NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                WHERE e.status = 'pending' AND e.client_id = d.client_id
                  AND e.task_id = d.task_id AND e.seq < d.seq)"""
# ...or has not been queued yet (fewer earlier deliveries than its predecessors: that event
# reaches the notifier late, e.g. redelivered by JetStream after a notifier died holding it).
_PREDECESSORS_QUEUED = """
    (d.predecessors = 0
     OR (SELECT count(*) FROM webhook_deliveries e
         WHERE e.client_id = d.client_id AND e.task_id = d.task_id
           AND e.seq < d.seq) >= d.predecessors)"""
# An event that has not come after this long never will (every event goes through the
# outbox, so this takes a bug or lost data): the later ones go out without it.
_STOP_WAITING_AT = "d.created_at + make_interval(secs => :missing_event_wait_seconds)"

_CLAIM_DUE = text(f"""
    WITH due AS (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
          AND {_FIRST_PENDING_OF_ITS_TASK}
          AND ({_PREDECESSORS_QUEUED} OR {_STOP_WAITING_AT} <= now())
        ORDER BY d.next_attempt_at, d.id
        LIMIT :how_many
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries w
    SET attempts = w.attempts + 1,
        next_attempt_at = now() + make_interval(secs => :lease_seconds)
    FROM due
    WHERE w.id = due.id
    RETURNING w.*, EXTRACT(EPOCH FROM now() - w.created_at) AS age_seconds
""")  # noqa: S608 - constant SQL


async def claim_due(
    conn: AsyncConnection, how_many: int, lease_seconds: float, missing_event_wait_seconds: float
) -> Sequence[Row[Any]]:
    """Take due deliveries for one attempt each; the lease keeps other notifiers off them."""
    params = {
        "how_many": how_many,
        "lease_seconds": lease_seconds,
        "missing_event_wait_seconds": missing_event_wait_seconds,
    }
    rows: Sequence[Row[Any]] = (await conn.execute(_CLAIM_DUE, params)).all()
    return rows


# Only the first pending delivery of each task can become due by itself; a later one waits
# for it, and its end wakes the notifiers (finish). Looking at the 100 first by
# next_attempt_at keeps this an index walk; beyond them the sender's 30 s cap is the bound.
_SECONDS_UNTIL_NEXT_DUE = text(f"""
    SELECT EXTRACT(EPOCH FROM min(claimable_at) - now()) FROM (
        SELECT CASE WHEN {_PREDECESSORS_QUEUED} THEN d.next_attempt_at
                    ELSE greatest(d.next_attempt_at, {_STOP_WAITING_AT}) END AS claimable_at
        FROM webhook_deliveries d
        WHERE d.status = 'pending' AND {_FIRST_PENDING_OF_ITS_TASK}
        ORDER BY d.next_attempt_at
        LIMIT 100
    ) first
""")  # noqa: S608 - constant SQL


async def seconds_until_next_due(
    conn: AsyncConnection, missing_event_wait_seconds: float
) -> float | None:
    """Seconds until a pending delivery can be sent (None if there is none). Deliveries held
    up behind an earlier event of their task do not count: counting them made an idle
    sender query in a loop while a task's first event waited for its retry."""
    params = {"missing_event_wait_seconds": missing_event_wait_seconds}
    value = (await conn.execute(_SECONDS_UNTIL_NEXT_DUE, params)).scalar_one_or_none()
    return None if value is None else float(value)


async def record_attempt(conn: AsyncConnection, **values: Any) -> None:
    """Keep one attempt's outcome (status code, error, duration)."""
    await conn.execute(attempts.insert().values(**values))


async def finish(conn: AsyncConnection, delivery_id: int, status: str, error: str) -> None:
    """delivered, failed (final answer) or dead (retries exhausted)."""
    stmt = text("""
        UPDATE webhook_deliveries
        SET status = :status, last_error = :error, finished_at = now()
        WHERE id = :id
    """)
    await conn.execute(stmt, {"id": delivery_id, "status": status, "error": error})


async def retry_later(
    conn: AsyncConnection, delivery_id: int, retry_after: float, error: str
) -> None:
    """Try again after the backoff."""
    stmt = text("""
        UPDATE webhook_deliveries
        SET next_attempt_at = now() + make_interval(secs => :retry_after), last_error = :error
        WHERE id = :id
    """)
    await conn.execute(stmt, {"id": delivery_id, "retry_after": retry_after, "error": error})


async def list_dead(conn: AsyncConnection, client_id: str | None, limit: int) -> Sequence[Row[Any]]:
    """Dead letters, newest first."""
    stmt = select(deliveries).where(deliveries.c.status == "dead")
    if client_id is not None:
        stmt = stmt.where(deliveries.c.client_id == client_id)
    rows: Sequence[Row[Any]] = (
        await conn.execute(stmt.order_by(deliveries.c.id.desc()).limit(limit))
    ).all()
    return rows


async def replay(conn: AsyncConnection, delivery_ids: Sequence[int]) -> int:
    """Give dead deliveries a fresh set of attempts, now."""
    stmt = (
        update(deliveries)
        .where(deliveries.c.id.in_(delivery_ids), deliveries.c.status == "dead")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=text("now()"),
            created_at=text("now()"),  # the retry age limit starts again
            finished_at=None,
        )
    )
    count = (await conn.execute(stmt)).rowcount
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})
    return int(count)


# -- tenants' webhook secrets (services/notifier/tenant_secrets.py) ----------------------

_SIGNING_SECRETS = text("""
    SELECT version, sealed FROM webhook_secrets s
    WHERE client_id = :client_id
      AND (retires_at IS NULL OR retires_at > now()
           OR version = (SELECT max(version) FROM webhook_secrets WHERE client_id = :client_id))
    ORDER BY version DESC
""")


async def signing_secrets(conn: AsyncConnection, client_id: str) -> Sequence[Row[Any]]:
    """A client's secrets that sign now, newest first: the current one and any still in its
    overlap (none: the client has no secret of its own)."""
    rows: Sequence[Row[Any]] = (
        await conn.execute(_SIGNING_SECRETS, {"client_id": client_id})
    ).all()
    return rows


async def list_secrets(
    conn: AsyncConnection, client_id: str, *, for_update: bool = False
) -> Sequence[Row[Any]]:
    """Every version of a client's secret, newest first, with whether it still signs."""
    stmt = text(f"""
        SELECT version, sealed, created_at, retires_at,
               retires_at IS NULL OR retires_at > now() AS live
        FROM webhook_secrets WHERE client_id = :client_id
        ORDER BY version DESC {"FOR UPDATE" if for_update else ""}
    """)  # noqa: S608 - constant SQL
    rows: Sequence[Row[Any]] = (await conn.execute(stmt, {"client_id": client_id})).all()
    return rows


async def add_secret(
    conn: AsyncConnection,
    client_id: str,
    version: int,
    sealed: bytes,
    retires_in_seconds: float | None,
) -> None:
    """Store a version of a client's secret (retiring after that long, or current: None)."""
    stmt = text("""
        INSERT INTO webhook_secrets (client_id, version, sealed, retires_at)
        VALUES (:client_id, :version, :sealed,
                now() + make_interval(secs => CAST(:retires_in AS double precision)))
    """)
    await conn.execute(
        stmt,
        {
            "client_id": client_id,
            "version": version,
            "sealed": sealed,
            "retires_in": retires_in_seconds,
        },
    )


async def retire_secrets(
    conn: AsyncConnection, client_id: str, below_version: int, in_seconds: float
) -> None:
    """Versions below `below_version` stop signing within `in_seconds` (never later than
    they were to)."""
    stmt = text("""
        UPDATE webhook_secrets
        SET retires_at = least(coalesce(retires_at, 'infinity'),
                               now() + make_interval(secs => :in_seconds))
        WHERE client_id = :client_id AND version < :below_version
    """)
    await conn.execute(
        stmt, {"client_id": client_id, "below_version": below_version, "in_seconds": in_seconds}
    )
