"""Every SQL statement the notifier runs, one function each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.models import WebhookAttempt, WebhookDelivery
from services.notifier.limits import Room

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

# The receiving host of a delivery's URL: its authority (between "://" and the first "/", "?"
# or "#"), after the last "@" (user info), without the port, in lower case; "[…]" for IPv6.
# The key of the per-host cap: the claim computes it, the sender counts by what the claim
# returned. String functions, no regular expression: a claim computes it for every due
# delivery it reads past (a slow host's backlog), and a regex made that 10 times dearer.
_AUTHORITY = (
    "split_part(split_part(split_part(split_part(d.url, '://', 2), '/', 1), '?', 1), '#', 1)"
)
_HOST_AND_PORT = f"reverse(split_part(reverse({_AUTHORITY}), '@', 1))"
_HOST = f"""
    lower(CASE WHEN left({_HOST_AND_PORT}, 1) = '['
               THEN split_part({_HOST_AND_PORT}, ']', 1) || ']'
               ELSE split_part({_HOST_AND_PORT}, ':', 1) END)"""
# A host or tenant at its in-flight cap in this sender is not claimed from at all: a delivery
# is claimed only when it can start at once, never to wait for a slot while its lease runs.
_NOT_FULL = f"""
    d.client_id <> ALL(CAST(:full_tenants AS text[]))
    AND {_HOST} <> ALL(CAST(:full_hosts AS text[]))"""

# Locking: the due deliveries, oldest first, are locked FOR UPDATE SKIP LOCKED (another
# notifier's claim skips them; theirs are skipped here). Of those, each host and each tenant
# gets at most its cap less what this sender has in flight for it (`busy_*`: parallel arrays
# of names and counts); the locks on the rest are let go at commit, untouched. The claimed
# ones get a lease (next_attempt_at in the future), which the sender extends while they are
# in flight.
_CLAIM_DUE = text(f"""
    WITH candidates AS (
        SELECT d.id, d.client_id, d.next_attempt_at, {_HOST} AS host
        FROM webhook_deliveries d
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
          AND {_NOT_FULL}
          AND {_FIRST_PENDING_OF_ITS_TASK}
          AND ({_PREDECESSORS_QUEUED} OR {_STOP_WAITING_AT} <= now())
        ORDER BY d.next_attempt_at, d.id
        LIMIT :how_many
        FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT c.id, c.host, c.client_id,
               row_number() OVER (PARTITION BY c.host
                                  ORDER BY c.next_attempt_at, c.id) AS nth_of_host,
               row_number() OVER (PARTITION BY c.client_id
                                  ORDER BY c.next_attempt_at, c.id) AS nth_of_tenant
        FROM candidates c
    ), due AS (
        SELECT r.id, r.host FROM ranked r
        LEFT JOIN unnest(CAST(:busy_hosts AS text[]), CAST(:busy_host_counts AS int[]))
            AS h(host, in_flight) ON h.host = r.host
        LEFT JOIN unnest(CAST(:busy_tenants AS text[]), CAST(:busy_tenant_counts AS int[]))
            AS t(client_id, in_flight) ON t.client_id = r.client_id
        WHERE r.nth_of_host + coalesce(h.in_flight, 0) <= :per_host
          AND r.nth_of_tenant + coalesce(t.in_flight, 0) <= :per_tenant
    )
    UPDATE webhook_deliveries w
    SET attempts = w.attempts + 1,
        next_attempt_at = now() + make_interval(secs => :lease_seconds)
    FROM due
    WHERE w.id = due.id
    RETURNING w.*, due.host, EXTRACT(EPOCH FROM now() - w.created_at) AS age_seconds
""")  # noqa: S608 - constant SQL


async def claim_due(
    conn: AsyncConnection,
    room: Room,
    lease_seconds: float,
    missing_event_wait_seconds: float,
) -> Sequence[Row[Any]]:
    """Take due deliveries for one attempt each, as many as `room` leaves each host and
    tenant; the lease keeps other notifiers off them."""
    params = {
        "how_many": room.total,
        "lease_seconds": lease_seconds,
        "missing_event_wait_seconds": missing_event_wait_seconds,
        "per_host": room.caps.per_host,
        "per_tenant": room.caps.per_tenant,
        **_full(room),
        "busy_hosts": list(room.busy_hosts),
        "busy_host_counts": list(room.busy_hosts.values()),
        "busy_tenants": list(room.busy_tenants),
        "busy_tenant_counts": list(room.busy_tenants.values()),
    }
    rows: Sequence[Row[Any]] = (await conn.execute(_CLAIM_DUE, params)).all()
    return rows


def _full(room: Room) -> dict[str, list[str]]:
    return {"full_hosts": list(room.full_hosts), "full_tenants": list(room.full_tenants)}


_EXTEND_LEASES = text("""
    UPDATE webhook_deliveries w
    SET next_attempt_at = now() + make_interval(secs => :lease_seconds)
    FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS int[])) AS mine(id, attempt)
    WHERE w.id = mine.id AND w.attempts = mine.attempt AND w.status = 'pending'
""")


async def extend_leases(
    conn: AsyncConnection, leases: Mapping[int, int], lease_seconds: float
) -> None:
    """Renew the leases of deliveries still in flight ({id: attempt}); one that another
    notifier has taken since (a later attempt) is left alone."""
    params = {
        "ids": list(leases),
        "attempts": list(leases.values()),
        "lease_seconds": lease_seconds,
    }
    await conn.execute(_EXTEND_LEASES, params)


# Only the first pending delivery of each task can become due by itself; a later one waits
# for it, and its end wakes the notifiers (finish). Looking at the 100 first by
# next_attempt_at keeps this an index walk; beyond them the sender's 30 s cap is the bound.
_SECONDS_UNTIL_NEXT_DUE = text(f"""
    SELECT EXTRACT(EPOCH FROM min(claimable_at) - now()) FROM (
        SELECT CASE WHEN {_PREDECESSORS_QUEUED} THEN d.next_attempt_at
                    ELSE greatest(d.next_attempt_at, {_STOP_WAITING_AT}) END AS claimable_at
        FROM webhook_deliveries d
        WHERE d.status = 'pending' AND {_NOT_FULL} AND {_FIRST_PENDING_OF_ITS_TASK}
        ORDER BY d.next_attempt_at
        LIMIT 100
    ) first
""")  # noqa: S608 - constant SQL


async def seconds_until_next_due(
    conn: AsyncConnection, missing_event_wait_seconds: float, room: Room | None = None
) -> float | None:
    """Seconds until a pending delivery can be sent (None if there is none). Deliveries held
    up behind an earlier event of their task do not count: counting them made an idle
    sender query in a loop while a task's first event waited for its retry. Nor do those of
    the hosts and tenants at their cap: a delivery of theirs that ends wakes the sender."""
    full = _full(room) if room is not None else {"full_hosts": [], "full_tenants": []}
    params = {"missing_event_wait_seconds": missing_event_wait_seconds, **full}
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
