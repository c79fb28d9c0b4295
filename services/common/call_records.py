"""The one statement on `calls` that both the dispatcher and the dialer run."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.vocabulary import CALL_IN_PROGRESS

# A call that already ended needs no note: its result decides the attempt.
_NOTE_CALLS_CONNECTED = text(f"""
    UPDATE calls SET connected_at = now()
    WHERE call_uuid = ANY(:call_uuids) AND connected_at IS NULL
      AND result = '{CALL_IN_PROGRESS}'
""")  # noqa: S608 - constant SQL


async def note_calls_connected(conn: AsyncConnection, call_uuids: Sequence[str]) -> None:
    """Note that calls connected A and B: if their end is then never reported, the lease
    check still counts their attempt as connected. The dispatcher notes the calls whose
    `success` event it announces; the dialer the others (tasks without url_success)."""
    if call_uuids:
        await conn.execute(_NOTE_CALLS_CONNECTED, {"call_uuids": list(call_uuids)})
