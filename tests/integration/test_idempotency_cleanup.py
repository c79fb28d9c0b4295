"""Expired Idempotency-Keys are deleted by the dispatchers' periodic pass; live ones stay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from services.common.db import make_engine, transaction
from services.common.retention import IDEMPOTENCY_KEY_LIFETIME
from services.dispatcher import repository


async def test_only_expired_keys_are_deleted_in_batches(migrated_database: str) -> None:
    engine = make_engine(migrated_database, pool_size=1)
    try:
        async with transaction(engine) as conn:
            await conn.execute(
                text("""
                    INSERT INTO idempotency_keys (client_id, key, request_hash, response,
                                                  created_at)
                    SELECT 'acme', 'k' || i, '\\x00', '\\x00',
                           now() - CASE WHEN i <= 5 THEN interval '25 hours'
                                        ELSE interval '23 hours' END
                    FROM generate_series(1, 8) AS i
                """)
            )
        async with transaction(engine) as conn:
            first = await repository.delete_expired_idempotency_keys(
                conn, IDEMPOTENCY_KEY_LIFETIME, batch=3
            )
            second = await repository.delete_expired_idempotency_keys(
                conn, IDEMPOTENCY_KEY_LIFETIME, batch=3
            )
            third = await repository.delete_expired_idempotency_keys(
                conn, timedelta(hours=24), batch=3
            )
            left = (
                await conn.execute(text("SELECT key FROM idempotency_keys ORDER BY key"))
            ).scalars()
            assert (first, second, third) == (3, 2, 0)
            assert list(left) == ["k6", "k7", "k8"]
    finally:
        await engine.dispose()
