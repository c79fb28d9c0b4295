"""Operator commands for tenants: quotas, SIP accounts, caller ids and destination rules.

    python -m services.api.admin show CLIENT            (or: list)
    python -m services.api.admin set CLIENT [--max-in-progress N] [--calls-per-second X]
        [--max-stored-tasks N] [--caller-id NUMBER ...] [--allow PREFIX ...] [--deny PREFIX ...]
        (onboards a tenant in one go; a quota given as "default" goes back to the default)
    python -m services.api.admin account add CLIENT EXTENSION --username U --password-stdin
    python -m services.api.admin account remove CLIENT EXTENSION
    python -m services.api.admin caller-id add|remove CLIENT NUMBER [NUMBER ...]
    python -m services.api.admin rule allow|deny|remove CLIENT PREFIX
    python -m services.api.admin revoke-tokens CLIENT
        (every token of the client issued until now, this second included, is refused)

A tenant nobody configured gets the defaults (TENANT_DEFAULT_*: services/common/tenancy.py):
the operator's default SIP account (extension 0), no caller id, the default destination rules
and quotas. Reads DATABASE_URL. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from services.api import repository, tenants
from services.common.db import make_engine, transaction
from services.common.settings import SECRET_SAFE
from services.common.tenancy import TenantDefaults

_PHONE = re.compile(r"\+?[0-9*#]{1,31}")
_PREFIX = re.compile(r"\+?[0-9*#]{0,31}")
# SIP digest puts the username in a quoted string (RFC 2617): no quote, backslash or
# control character. The password only enters the hash.
_USERNAME = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,255}")
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,255}")


class AdminSettings(BaseSettings):
    model_config = SECRET_SAFE

    database_url: SecretStr = Field(validation_alias="DATABASE_URL")


class UsageError(ValueError):
    pass


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise UsageError(f"{what} {value!r} is not valid")
    return value


def _client(value: str) -> str:
    if not value or len(value) > 128 or not _PRINTABLE.fullmatch(value):
        raise UsageError("a client id is 1 to 128 printable ASCII characters")
    return value


def _quota(value: str | None, kind: type[int] | type[float]) -> Any:
    if value is None or value == "default":
        return None
    number = kind(value)
    if number < 0 or (kind is float and number == 0):
        raise UsageError(f"{value} is out of range")
    return number


async def _show(conn: Any, client_id: str, defaults: TenantDefaults) -> dict[str, Any]:
    tenant = await tenants.select_tenant(conn, client_id)
    quotas = {name: getattr(tenant, name) if tenant else None for name in tenants.QUOTAS}
    return {
        "client_id": client_id,
        "configured": tenant is not None,
        "quotas": {
            name: {"value": value, "default": getattr(defaults, name)}
            for name, value in quotas.items()
        },
        "stored_tasks": tenant.stored_tasks if tenant else 0,
        "tokens_not_before": tenant.tokens_not_before if tenant else None,
        "sip_accounts": [
            {"extension_id": a.extension_id, "username": a.username}
            for a in await tenants.select_accounts(conn, client_id)
        ],
        "caller_ids": await tenants.select_caller_ids(conn, client_id),
        "destination_rules": [
            {"prefix": r.prefix, "allow": r.allow}
            for r in await tenants.select_rules(conn, client_id)
        ],
        "default_denied_prefixes": list(defaults.denied_prefixes),
    }


async def run(args: argparse.Namespace) -> Any:
    engine = make_engine(AdminSettings().database_url.get_secret_value(), pool_size=1)  # type: ignore[call-arg]
    defaults = TenantDefaults()
    try:
        async with transaction(engine) as conn:
            if args.command == "list":
                return [dict(row._mapping) for row in await tenants.list_tenants(conn)]
            client_id = _client(args.client_id)
            if args.command == "set":
                changes = {
                    name: _quota(getattr(args, name), float if name == "calls_per_second" else int)
                    for name in tenants.QUOTAS
                    if getattr(args, name) is not None
                }
                await tenants.set_quotas(conn, client_id, changes)
                numbers = [_checked(_PHONE, n, "number") for n in args.caller_id]
                await tenants.add_caller_ids(conn, client_id, numbers)
                for prefix, allow in [(p, True) for p in args.allow] + [
                    (p, False) for p in args.deny
                ]:
                    await tenants.put_rule(
                        conn, client_id, _checked(_PREFIX, prefix, "prefix"), allow
                    )
            elif args.command == "account" and args.action == "add":
                password = (
                    sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
                )
                if not password or not _PRINTABLE.fullmatch(password):
                    raise UsageError("give a password of printable ASCII characters")
                await repository.ensure_tenant(conn, client_id)
                await tenants.put_account(
                    conn,
                    client_id,
                    args.extension_id,
                    _checked(_USERNAME, args.username, "username"),
                    password,
                )
            elif args.command == "account":
                await tenants.delete_account(conn, client_id, args.extension_id)
            elif args.command == "caller-id":
                numbers = [_checked(_PHONE, n, "number") for n in args.numbers]
                if args.action == "add":
                    await repository.ensure_tenant(conn, client_id)
                    await tenants.add_caller_ids(conn, client_id, numbers)
                else:
                    await tenants.delete_caller_ids(conn, client_id, numbers)
            elif args.command == "revoke-tokens":
                await repository.revoke_tokens(conn, client_id)
            elif args.command == "rule":
                prefix = _checked(_PREFIX, args.prefix, "prefix")
                if args.action == "remove":
                    await tenants.delete_rule(conn, client_id, prefix)
                else:
                    await repository.ensure_tenant(conn, client_id)
                    await tenants.put_rule(conn, client_id, prefix, args.action == "allow")
            return await _show(conn, client_id, defaults)
    finally:
        await engine.dispose()


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m services.api.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every configured tenant")
    show = commands.add_parser("show", help="a tenant's settings, defaults included")
    show.add_argument("client_id")
    update = commands.add_parser(
        "set", help="onboard or change a tenant: quotas ('default' resets), caller ids, rules"
    )
    update.add_argument("client_id")
    update.add_argument("--max-in-progress", dest="max_in_progress")
    update.add_argument("--calls-per-second", dest="calls_per_second")
    update.add_argument("--max-stored-tasks", dest="max_stored_tasks")
    update.add_argument("--caller-id", action="append", default=[], help="a number it owns")
    update.add_argument("--allow", action="append", default=[], help="a destination prefix")
    update.add_argument("--deny", action="append", default=[], help="a destination prefix")
    account = commands.add_parser("account", help="SIP accounts by extension_id")
    account.add_argument("action", choices=["add", "remove"])
    account.add_argument("client_id")
    account.add_argument("extension_id", type=int)
    account.add_argument("--username", default="")
    secret = account.add_mutually_exclusive_group()
    secret.add_argument("--password", help="visible to other users of this machine: prefer stdin")
    secret.add_argument("--password-stdin", action="store_true", help="read the password")
    caller = commands.add_parser("caller-id", help="numbers a tenant may show as caller id")
    caller.add_argument("action", choices=["add", "remove"])
    caller.add_argument("client_id")
    caller.add_argument("numbers", nargs="+")
    rule = commands.add_parser("rule", help="destination prefixes allowed or denied")
    rule.add_argument("action", choices=["allow", "deny", "remove"])
    rule.add_argument("client_id")
    rule.add_argument("prefix")
    revoke = commands.add_parser(
        "revoke-tokens", help="refuse every token of a client issued until now"
    )
    revoke.add_argument("client_id")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "account" and args.action == "add" and args.extension_id < 0:
        print("error: an extension id is 0 or more", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(args))
    except (UsageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
