"""Operator commands for webhooks: dead letters, and each client's signing secrets.

python -m services.notifier.admin dead [--client ID] [--limit N]
python -m services.notifier.admin replay ID [ID ...]
python -m services.notifier.admin secret rotate CLIENT [--overlap-hours N]
python -m services.notifier.admin secret list CLIENT
python -m services.notifier.admin secret show CLIENT
python -m services.notifier.admin secret retire CLIENT

Run as the schema owner (DATABASE_URL): the notifier's own role may only read secrets. The
`secret` commands need NOTIFIER_SIGNING_KEY too (secrets are sealed with a key derived from
it). `rotate` prints the new secret once, for the operator to hand to that client; `show`
prints the client's current secret; `list` prints versions and fingerprints, never secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.db import make_engine, transaction
from services.common.settings import SECRET_SAFE
from services.common.timefmt import format_utc
from services.notifier import repository, tenant_secrets
from services.notifier.keyring import Keyring, fingerprint

DEFAULT_OVERLAP_HOURS = 24.0


class AdminSettings(BaseSettings):
    model_config = SECRET_SAFE

    database_url: SecretStr = Field(validation_alias="DATABASE_URL")
    signing_key: SecretStr | None = Field(default=None, validation_alias="NOTIFIER_SIGNING_KEY")


class UsageError(ValueError):
    pass


def _utc(value: datetime | None) -> str:
    return "" if value is None else format_utc(value)


async def run(args: argparse.Namespace) -> None:
    settings = AdminSettings()  # type: ignore[call-arg]  # filled from the environment
    keyring: Keyring | None = None
    if args.command == "secret":
        if settings.signing_key is None:
            raise UsageError("the secret commands need NOTIFIER_SIGNING_KEY (the master key)")
        keyring = Keyring(settings.signing_key.get_secret_value())
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
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
            elif args.command == "replay":
                print(f"replayed {await repository.replay(conn, args.ids)}")
            else:
                assert keyring is not None
                await _secret(conn, keyring, args)
    finally:
        await engine.dispose()


async def _secret(conn: AsyncConnection, keyring: Keyring, args: argparse.Namespace) -> None:
    client = args.client
    if args.action == "rotate":
        if args.overlap_hours < 0:
            raise UsageError("--overlap-hours must be 0 or more")
        new = await tenant_secrets.rotate(conn, keyring, client, args.overlap_hours * 3600)
        listed = await tenant_secrets.versions(conn, keyring, client)
        previous = next((v for v in listed if v.version == new.version - 1), None)
        print(
            json.dumps(
                {
                    "client_id": client,
                    "version": new.version,
                    "secret": new.secret,
                    "fingerprint": fingerprint(new.secret),
                    "previous_version": new.version - 1,
                    "previous_signs_until_utc": _utc(previous.retires_at if previous else None),
                }
            )
        )
    elif args.action == "show":
        current = (await tenant_secrets.versions(conn, keyring, client))[0]
        print(current.secret)
    elif args.action == "retire":
        await tenant_secrets.retire_previous(conn, client)
        print(f"only version {(await tenant_secrets.versions(conn, keyring, client))[0].version}")
    else:
        for v in await tenant_secrets.versions(conn, keyring, client):
            state = "current" if v.retires_at is None else ("overlap" if v.live else "retired")
            entry = {
                "client_id": client,
                "version": v.version,
                "state": state,
                "fingerprint": fingerprint(v.secret),
                "created_utc": _utc(v.created_at) or "derived from NOTIFIER_SIGNING_KEY",
                "signs_until_utc": _utc(v.retires_at),
            }
            print(json.dumps(entry))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.notifier.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dead = commands.add_parser("dead", help="list dead letters, newest first")
    dead.add_argument("--client")
    dead.add_argument("--limit", type=int, default=100)
    replay = commands.add_parser("replay", help="deliver dead letters again")
    replay.add_argument("ids", nargs="+", type=int)
    secret = commands.add_parser("secret", help="a client's webhook signing secrets")
    actions = secret.add_subparsers(dest="action", required=True)
    rotate = actions.add_parser(
        "rotate", help="a new random secret; the previous one signs too during the overlap"
    )
    rotate.add_argument("client")
    rotate.add_argument(
        "--overlap-hours",
        type=float,
        default=DEFAULT_OVERLAP_HOURS,
        help=f"how long the previous secret signs beside the new one (default "
        f"{DEFAULT_OVERLAP_HOURS:g}; 0: stops at once)",
    )
    for name, text in (
        ("list", "versions, states and fingerprints (no secrets)"),
        ("show", "print the client's current secret (for that client only)"),
        ("retire", "end the overlap now: only the current secret signs"),
    ):
        actions.add_parser(name, help=text).add_argument("client")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        asyncio.run(run(args))
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
