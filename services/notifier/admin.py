"""Operator commands for webhooks: list dead letters, replay them.

python -m services.notifier.admin dead [--client ID] [--limit N]
python -m services.notifier.admin replay ID [ID ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json

from services.common.db import make_engine, transaction
from services.common.timefmt import format_utc
from services.notifier import repository
from services.notifier.settings import NotifierSettings


async def run(args: argparse.Namespace) -> None:
    settings = NotifierSettings(signing_key="unused")  # type: ignore[call-arg]
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(engine) as conn:
            if args.command == "dead":
                for row in await repository.list_dead(conn, args.client, args.limit):
                    entry = {
                        "id": row.id,
                        "client_id": row.client_id,
                        "task_id": row.task_id,
                        "event": row.event,
                        "event_id": row.event_id,
                        "url": row.url,
                        "attempts": row.attempts,
                        "last_error": row.last_error,
                        "created_utc": format_utc(row.created_at),
                    }
                    print(json.dumps(entry))
            else:
                print(f"replayed {await repository.replay(conn, args.ids)}")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dead = commands.add_parser("dead", help="list dead letters, newest first")
    dead.add_argument("--client")
    dead.add_argument("--limit", type=int, default=100)
    replay = commands.add_parser("replay", help="deliver dead letters again")
    replay.add_argument("ids", nargs="+", type=int)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
