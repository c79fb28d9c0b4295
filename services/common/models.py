"""The schema, defined once. Alembic revisions are checked against it (`alembic check`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.vocabulary import CALL_IN_PROGRESS, STORED, WAITING, FinishResult, TaskStatus

# Stable constraint names, so that migrations can name what they change.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUEUE_STATUSES = ("on", "off")
# Values (not members): _in() writes them into CHECK constraints with repr().
TASK_STATUSES = tuple(status.value for status in STORED)
FINISH_RESULTS = tuple(result.value for result in FinishResult)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Queue(Base):
    """A task queue ("task_scheduler"), owned by one client."""

    __tablename__ = "queues"
    __table_args__ = (
        CheckConstraint(_in("status", QUEUE_STATUSES), name="status"),
        CheckConstraint("concurrent_task_limit >= 1", name="concurrent_task_limit"),
        # Ids are 32-bit on the wire (JSON numbers, see proto): keep them in range.
        CheckConstraint("id <= 4294967295", name="id_range"),
        Index(None, "client_id", "id"),
        # A queue names only an interval of its own client (the pair is the key), and an
        # interval a queue names cannot be deleted.
        ForeignKeyConstraint(["client_id", "interval_id"], ["intervals.client_id", "intervals.id"]),
        # The queues of an interval (its DELETE is refused while there are any).
        Index(None, "interval_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(3))
    concurrent_task_limit: Mapped[int] = mapped_column(Integer)
    create_date_utc: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # The calling window; NULL: always open.
    interval_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When the queue's latest call was dialed (set by the claim's trigger, migration 0017);
    # NULL: none yet.
    last_call_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueueTaskCount(Base):
    """A queue's task counters, kept by triggers on tasks (migration 0017): the API shows
    them without counting (O(1) per queue, whatever the queue holds)."""

    __tablename__ = "queue_task_counts"

    queue_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    )
    # Every task of the queue, and those not finished (scheduled, delayed, executed).
    task_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    sched_task_count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Interval(Base):
    """A calling window ("interval"), owned by one client: when the queues that name it may
    start calls (services/common/calling_windows.py evaluates it)."""

    __tablename__ = "intervals"
    __table_args__ = (
        CheckConstraint("id <= 4294967295", name="id_range"),
        # Also the target of the queues' foreign key (client_id, interval_id).
        UniqueConstraint("client_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    # An IANA name, checked by the api against the time zone database.
    timezone: Mapped[str] = mapped_column(String(64))
    # The conditions as the API shows them (a list of objects, in order).
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class Task(Base):
    """One callback: call a_number, then b_number, and connect them."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        CheckConstraint(_in("finish_result", FINISH_RESULTS), name="finish_result"),
        CheckConstraint("try_count BETWEEN 1 AND 50", name="try_count"),
        CheckConstraint("try_again_pause >= 0", name="try_again_pause"),
        CheckConstraint("try_count_caller BETWEEN 0 AND 50", name="try_count_caller"),
        CheckConstraint("try_again_pause_caller >= 0", name="try_again_pause_caller"),
        CheckConstraint("id <= 4294967295", name="id_range"),
        # Paging a queue's tasks by id, optionally filtered by status.
        Index(None, "queue_id", "id"),
        Index(None, "queue_id", "status", "id"),
        # Finding a queue's tasks by number (the list's `number` filter: A or B).
        Index(None, "queue_id", "a_number"),
        Index(None, "queue_id", "b_number"),
        # The dispatcher's claim: a queue's waiting tasks, earliest due first.
        Index(
            "ix_tasks_waiting",
            "queue_id",
            "next_run_at",
            "id",
            postgresql_where=text(_in("status", tuple(status.value for status in WAITING))),
        ),
        # The dispatcher's timer: the next lease to run out.
        Index(
            "ix_tasks_leases",
            "lease_expires_at",
            postgresql_where=text(f"status = '{TaskStatus.EXECUTED}'"),
        ),
        # A tenant's callbacks in progress, counted under its lock (the in-progress quota).
        Index(
            "ix_tasks_executed_by_client",
            "client_id",
            postgresql_where=text(f"status = '{TaskStatus.EXECUTED}'"),
        ),
        # The retention purge: finished tasks, oldest first.
        Index(
            "ix_tasks_finished",
            "finished_at",
            postgresql_where=text(f"status = '{TaskStatus.FINISHED}'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    queue_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("queues.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), server_default=TaskStatus.SCHEDULED.value)
    a_number: Mapped[str] = mapped_column(String(32))
    b_number: Mapped[str] = mapped_column(String(32))
    extension_id: Mapped[int] = mapped_column(Integer)
    try_count: Mapped[int] = mapped_column(Integer)
    try_again_pause: Mapped[int] = mapped_column(Integer)
    # Retries of the A leg (services/dispatcher/lifecycle.py): 0 = off.
    try_count_caller: Mapped[int] = mapped_column(Integer, server_default="0")
    try_again_pause_caller: Mapped[int] = mapped_column(Integer, server_default="0")
    url_before: Mapped[str] = mapped_column(Text)
    url_before_again: Mapped[str] = mapped_column(Text)
    url_success: Mapped[str] = mapped_column(Text)
    url_after: Mapped[str] = mapped_column(Text)
    start_time_utc: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    callback_params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    finish_result: Mapped[str] = mapped_column(String(7), server_default="")
    finish_comment: Mapped[str] = mapped_column(Text, server_default="")
    cdr: Mapped[str] = mapped_column(String(64), server_default="")
    create_date_utc: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # Scheduling state, owned by the dispatcher.
    # Number of the latest attempt (0 before the first); (id, attempts) names one call.
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # When a scheduled or delayed task becomes due (by the database clock).
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # While executed: when the attempt counts as lost if no result has arrived.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Times the current attempt was dialed again because no call was placed for it (its dial
    # request was lost, refused as too late, or its dialer died before dialing): such a
    # request spends no try. Back to 0 when the next attempt starts.
    redials: Mapped[int] = mapped_column(Integer, server_default="0")
    # When the task finished (NULL before; and for tasks finished before migration 0013
    # until the retention purge gives them one).
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Attempts that failed at the A leg so far (try_count_caller counts them): kept whether
    # or not try_count_caller is on, so that a limit set later by a reschedule counts the
    # failures that happened before it. Owned by the dispatcher.
    caller_failures: Mapped[int] = mapped_column(Integer, server_default="0")


class Call(Base):
    """One call placed for one attempt of a task; owned by the dialer.

    Inserted by the dialer when it takes the dial request, before the call is due (the work
    a phone would otherwise wait for), and marked `dialed_at` once the call was handed to
    the telephony backend. The unique (task_id, attempt) makes a second call for the same
    attempt impossible, whatever redelivers. No foreign key to tasks, on purpose: the
    record outlives a deleted task.
    """

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt"),
        # The dispatcher counts calls still going on for deleted tasks (see count_in_flight).
        Index(
            "ix_calls_of_deleted_tasks",
            "queue_id",
            "started_at",
            postgresql_where=text("task_deleted"),
        ),
        # The same calls by tenant (its in-progress quota counts them too).
        Index(
            "ix_calls_of_deleted_tasks_by_client",
            "client_id",
            "started_at",
            postgresql_where=text("task_deleted"),
        ),
        # Room beside each row for the record its end adds: ends are HOT updates (0009).
        {"postgresql_with": {"fillfactor": 10}},
    )

    call_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    queue_id: Mapped[int] = mapped_column(BigInteger)
    task_id: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    # "in_progress" until the call ends, then its result (see CallRecord.result).
    result: Mapped[str] = mapped_column(String(16), server_default=CALL_IN_PROGRESS)
    comment: Mapped[str] = mapped_column(Text, server_default="")
    # When the call was dialed (= dialed_at); until then, when the row was recorded.
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When the dialer handed the call to its backend; NULL: not dialed (yet). A row never
    # dialed is no call: the attempt is dialed again without spending a try.
    dialed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The recording dialer dials the call before this time (the database's clock) or not at
    # all; after it, a redelivered request may take the row over and dial it.
    dial_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When A and B were connected, noted by the dispatcher as it announced `success`, or by
    # the dialer for a task without url_success: an attempt whose end is then never
    # reported still counts as connected.
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by the API when it deletes the task: the call still holds a place in its queue
    # until it ends (a DELETE does not hang up).
    task_deleted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # Legs, answer times and durations, as the backend reported them.
    record: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class Tenant(Base):
    """A client's quotas, set by the operator (NULL: the operator's default), and the
    dispatcher's state for them.

    The claim locks this row: two dispatchers never claim for one tenant at once, so the
    count of its callbacks in progress (max_in_progress) is exact, like a queue's. The row
    also holds the calls-per-second token bucket, updated under the same lock.
    """

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("max_in_progress >= 0", name="max_in_progress"),
        CheckConstraint("calls_per_second > 0", name="calls_per_second"),
        CheckConstraint("max_stored_tasks >= 0", name="max_stored_tasks"),
    )

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    max_in_progress: Mapped[int | None] = mapped_column(Integer)
    calls_per_second: Mapped[float | None] = mapped_column(Double)
    max_stored_tasks: Mapped[int | None] = mapped_column(BigInteger)
    # Token bucket of new calls: tokens left at rate_refilled_at (NULL: a full bucket).
    rate_tokens: Mapped[float | None] = mapped_column(Double)
    rate_refilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Bearer tokens of this client issued (iat) before this time are refused (NULL: none);
    # set by `python -m services.api.admin revoke-tokens`.
    tokens_not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TenantUsage(Base):
    """How many tasks a client has stored (its max_stored_tasks quota), kept by the api as it
    adds and deletes tasks. Not a column of tenants: every bulk add updates it, and on the
    tenants row it would wait for the dispatcher's claim lock (and hold up the claim)."""

    __tablename__ = "tenant_usage"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stored_tasks: Mapped[int] = mapped_column(BigInteger, server_default="0")


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` and the response it got, for replaying a retried POST.

    Inserted in the same transaction as what the POST created: a concurrent request with the
    same key waits on the primary key until that transaction ends, then replays its response
    (or, after a rollback, goes ahead itself). Rows older than the key lifetime are replaced
    on reuse and deleted by the dispatchers' periodic stats pass.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of the RPC's name and its request (with the client id resolved).
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    # The serialized protobuf response; NULL only until the creating transaction stores it.
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantSipAccount(Base):
    """SIP credentials a client may place calls with, by the task's extension_id. Extension 0
    without a row of its own is the operator's default account (DIALER_SIP_ACCOUNTS)."""

    __tablename__ = "tenant_sip_accounts"
    __table_args__ = (CheckConstraint("extension_id >= 0", name="extension_id"),)

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    extension_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    password: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TenantCallerId(Base):
    """A number a client owns and may show as callback_params.caller_id_number."""

    __tablename__ = "tenant_caller_ids"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    number: Mapped[str] = mapped_column(String(32), primary_key=True)


class TenantDestinationRule(Base):
    """Numbers a client may (allow) or may not call, by prefix (digits, without a leading
    international prefix: see services/common/tenancy.py); the longest matching prefix wins,
    over the operator's default rules."""

    __tablename__ = "tenant_destination_rules"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), primary_key=True)
    allow: Mapped[bool] = mapped_column(Boolean)


class OutboxMessage(Base):
    """A NATS message written in the same transaction as the state change it announces.

    The publisher sends rows in id order with their msg_id as Nats-Msg-Id and deletes them
    once JetStream acknowledged: a crash between commit and publish loses nothing, and a
    crash between publish and delete is absorbed by JetStream's duplicate window.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128))
    msg_id: Mapped[str] = mapped_column(String(128), unique=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(Base):
    """One webhook event to deliver to one URL; owned by the notifier.

    Delivered in order per task (seq), retried with backoff; `dead` once the retry limit is
    reached (an operator can list and replay those).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed', 'dead')", name="status"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # Every delivery of a task, not only pending ones: the claim counts those that came
        # before (predecessors).
        Index("ix_webhook_deliveries_task_order", "client_id", "task_id", "seq"),
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(128))
    task_id: Mapped[int] = mapped_column(BigInteger)
    # Order of the task's events: attempt * 10 + rank of the event in an attempt.
    seq: Mapped[int] = mapped_column(Integer)
    # How many earlier events of the task have a URL (known from the task's URLs and attempt):
    # this one waits until they are all queued, even if they reach the notifier later.
    predecessors: Mapped[int] = mapped_column(Integer, server_default="0")
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_error: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery and how it went."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # "delivered", "retry", "failed" or "dead", and why.
    outcome: Mapped[str] = mapped_column(String(10))
    error: Mapped[str] = mapped_column(Text, server_default="")


class WebhookSecret(Base):
    """One version of a client's webhook signing secret (services/notifier/tenant_secrets.py).

    The highest version is the current one (retires_at NULL); a rotation gives the previous
    one a retires_at at the end of its overlap, until which both sign. Random, stored sealed
    (AES-256-GCM under a key derived from NOTIFIER_SIGNING_KEY, bound to client and
    version). A client without a row signs with version 1 derived from that master key.
    """

    __tablename__ = "webhook_secrets"
    __table_args__ = (CheckConstraint("version >= 1", name="version"),)

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
