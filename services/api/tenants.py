"""Every SQL statement of the operator's tenant settings (`python -m services.api.admin`),
one function each: quotas, SIP accounts, caller ids and destination rules per client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api import repository

QUOTAS = ("max_in_progress", "calls_per_second", "max_stored_tasks")


async def set_quotas(conn: AsyncConnection, client_id: str, quotas: dict[str, Any]) -> None:
    """Create the tenant if new and set the given quotas (None: back to the default)."""
    await repository.ensure_tenant(conn, client_id)
    for name, value in quotas.items():
        assert name in QUOTAS  # column names come from this list only, never from input
        stmt = text(f"UPDATE tenants SET {name} = :value WHERE client_id = :c")  # noqa: S608
        await conn.execute(stmt, {"c": client_id, "value": value})


async def select_tenant(conn: AsyncConnection, client_id: str) -> Row[Any] | None:
    """A tenant's quotas (NULL: default), stored tasks and token revocation time."""
    stmt = text("""
        SELECT t.client_id, t.max_in_progress, t.calls_per_second, t.max_stored_tasks,
               coalesce(u.stored_tasks, 0) AS stored_tasks, t.tokens_not_before
        FROM tenants t LEFT JOIN tenant_usage u USING (client_id)
        WHERE t.client_id = :c
    """)
    return (await conn.execute(stmt, {"c": client_id})).one_or_none()


async def list_tenants(conn: AsyncConnection) -> Sequence[Row[Any]]:
    """Every tenant with its quotas, stored tasks and token revocation time."""
    stmt = text("""
        SELECT t.client_id, t.max_in_progress, t.calls_per_second, t.max_stored_tasks,
               coalesce(u.stored_tasks, 0) AS stored_tasks, t.tokens_not_before
        FROM tenants t LEFT JOIN tenant_usage u USING (client_id)
        ORDER BY t.client_id
    """)
    return (await conn.execute(stmt)).all()


async def put_account(
    conn: AsyncConnection, client_id: str, extension_id: int, username: str, password: str
) -> None:
    """Give a tenant a SIP account under an extension id (replacing the one it had)."""
    stmt = text("""
        INSERT INTO tenant_sip_accounts (client_id, extension_id, username, password)
        VALUES (:c, :e, :u, :p)
        ON CONFLICT (client_id, extension_id)
        DO UPDATE SET username = excluded.username, password = excluded.password
    """)
    await conn.execute(stmt, {"c": client_id, "e": extension_id, "u": username, "p": password})


async def delete_account(conn: AsyncConnection, client_id: str, extension_id: int) -> bool:
    """Take a SIP account away from a tenant."""
    stmt = text("DELETE FROM tenant_sip_accounts WHERE client_id = :c AND extension_id = :e")
    return (await conn.execute(stmt, {"c": client_id, "e": extension_id})).rowcount > 0


async def select_accounts(conn: AsyncConnection, client_id: str) -> Sequence[Row[Any]]:
    """A tenant's SIP accounts (extension id and username; never the password)."""
    stmt = text("""
        SELECT extension_id, username FROM tenant_sip_accounts
        WHERE client_id = :c ORDER BY extension_id
    """)
    return (await conn.execute(stmt, {"c": client_id})).all()


async def add_caller_ids(conn: AsyncConnection, client_id: str, numbers: Sequence[str]) -> None:
    """Register numbers a tenant owns as its caller ids."""
    stmt = text("""
        INSERT INTO tenant_caller_ids (client_id, number)
        SELECT :c, unnest(CAST(:numbers AS text[])) ON CONFLICT DO NOTHING
    """)
    await conn.execute(stmt, {"c": client_id, "numbers": list(numbers)})


async def delete_caller_ids(conn: AsyncConnection, client_id: str, numbers: Sequence[str]) -> int:
    """Take caller ids away from a tenant; how many it had."""
    stmt = text("DELETE FROM tenant_caller_ids WHERE client_id = :c AND number = ANY(:numbers)")
    return (await conn.execute(stmt, {"c": client_id, "numbers": list(numbers)})).rowcount


async def select_caller_ids(conn: AsyncConnection, client_id: str) -> list[str]:
    """A tenant's caller ids."""
    stmt = text("SELECT number FROM tenant_caller_ids WHERE client_id = :c ORDER BY number")
    return list((await conn.execute(stmt, {"c": client_id})).scalars())


async def put_rule(conn: AsyncConnection, client_id: str, prefix: str, allow: bool) -> None:
    """Allow or deny a tenant the numbers starting with a prefix."""
    stmt = text("""
        INSERT INTO tenant_destination_rules (client_id, prefix, allow) VALUES (:c, :p, :a)
        ON CONFLICT (client_id, prefix) DO UPDATE SET allow = excluded.allow
    """)
    await conn.execute(stmt, {"c": client_id, "p": prefix, "a": allow})


async def delete_rule(conn: AsyncConnection, client_id: str, prefix: str) -> bool:
    """Remove one of a tenant's destination rules."""
    stmt = text("DELETE FROM tenant_destination_rules WHERE client_id = :c AND prefix = :p")
    return (await conn.execute(stmt, {"c": client_id, "p": prefix})).rowcount > 0


async def select_rules(conn: AsyncConnection, client_id: str) -> Sequence[Row[Any]]:
    """A tenant's destination rules."""
    stmt = text("""
        SELECT prefix, allow FROM tenant_destination_rules WHERE client_id = :c ORDER BY prefix
    """)
    return (await conn.execute(stmt, {"c": client_id})).all()
