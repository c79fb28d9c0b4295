"""Database engine and the translation of driver failures into domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.common.errors import FieldViolation, InvalidInput, StorageUnavailable


def sqlalchemy_url(database_url: str) -> str:
    """Accept plain `postgresql://` URLs (as libpq and pgserver print them) and pick psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def libpq_url(database_url: str) -> str:
    """The same URL for psycopg used directly (LISTEN needs its own connection)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(database_url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """An async engine. With pre_ping, dead connections (after a PostgreSQL restart) are
    noticed before use, at the cost of a round trip per transaction; services that retry
    by themselves turn it off and let the failed transaction discard the connection."""
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; a lost or unreachable database becomes StorageUnavailable."""
    try:
        async with engine.begin() as conn:
            yield conn
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError) as err:
        raise StorageUnavailable("the database is unavailable, try again shortly") from err
    except sa_exc.DataError as err:
        # Validation should have caught it; if not, it is still the client's value at fault.
        raise InvalidInput([FieldViolation("body", "a value cannot be stored")]) from err
    except sa_exc.DBAPIError as err:
        if err.connection_invalidated:
            raise StorageUnavailable("the database is unavailable, try again shortly") from err
        raise
