"""The schema, defined once. Alembic revisions are checked against it (`alembic check`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that migrations can name what they change.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUEUE_STATUSES = ("on", "off")
TASK_STATUSES = ("scheduled", "executed", "delayed", "finished")
FINISH_RESULTS = ("", "success", "failed")


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


class Task(Base):
    """One callback: call a_number, then b_number, and connect them."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        CheckConstraint(_in("finish_result", FINISH_RESULTS), name="finish_result"),
        CheckConstraint("try_count BETWEEN 1 AND 50", name="try_count"),
        CheckConstraint("try_again_pause >= 0", name="try_again_pause"),
        CheckConstraint("id <= 4294967295", name="id_range"),
        # Paging a queue's tasks by id, optionally filtered by status.
        Index(None, "queue_id", "id"),
        Index(None, "queue_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    queue_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("queues.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(9), server_default="scheduled")
    a_number: Mapped[str] = mapped_column(String(32))
    b_number: Mapped[str] = mapped_column(String(32))
    extension_id: Mapped[int] = mapped_column(Integer)
    try_count: Mapped[int] = mapped_column(Integer)
    try_again_pause: Mapped[int] = mapped_column(Integer)
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
