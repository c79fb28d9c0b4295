"""One PostgreSQL role per service, with only the grants it needs (least privilege).

The schema belongs to the migrating user (the owner); each service logs in as its own role,
`<database>_<service>`, so that the notifier (which talks to the internet) cannot read tasks
or SIP passwords, the dialer cannot change a task's state, and so on. `apply` creates or
updates the roles and their grants; it runs as the owner after every migration (the local
stack, and the Kubernetes migrate Job), and revokes whatever a role had before, so the table
below is the whole truth.

`python -m services.common.db_roles [--passwords-from-env]` applies them to DATABASE_URL;
with --passwords-from-env a role's password is read from DB_ROLE_PASSWORD_<SERVICE>
(otherwise the roles exist and get their grants; their passwords are set elsewhere, e.g. by
the CloudNativePG operator's managed roles).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

SERVICES = ("api", "dispatcher", "dialer", "notifier")

# Table -> privileges, per service. A column list in parentheses grants those columns only.
GRANTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "api": {
        "queues": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "tasks": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        # Call history, and the mark of calls whose task is deleted mid-call.
        "calls": ("SELECT", "UPDATE (task_deleted)"),
        "tenants": ("SELECT", "INSERT", "UPDATE"),
        "tenant_usage": ("SELECT", "INSERT", "UPDATE"),
        # Which extensions a tenant owns; never their passwords.
        "tenant_sip_accounts": ("SELECT (client_id, extension_id)",),
        "tenant_caller_ids": ("SELECT",),
        "tenant_destination_rules": ("SELECT",),
        "idempotency_keys": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        # Calling windows: the api alone writes them.
        "intervals": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        # Queue counters: shown by the api, kept by triggers (SECURITY DEFINER, 0017).
        "queue_task_counts": ("SELECT",),
    },
    "dispatcher": {
        # Locked FOR UPDATE when claimed, which needs UPDATE on some column: the one whose
        # change does the least harm. The dispatcher never changes a queue.
        "queues": ("SELECT", "UPDATE (comment)"),
        "tasks": ("SELECT", "UPDATE", "DELETE"),  # DELETE: the retention purge
        "calls": ("SELECT", "UPDATE", "DELETE"),
        "tenants": ("SELECT", "INSERT", "UPDATE"),
        "tenant_usage": ("SELECT", "UPDATE"),
        # UPDATE: taken FOR UPDATE SKIP LOCKED by the publisher (it may insert any message
        # anyway).
        "outbox": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "idempotency_keys": ("SELECT", "DELETE"),
        "webhook_deliveries": ("SELECT", "DELETE"),  # the retention purge
        # Reads the calling windows of the queues it claims for; never changes one.
        "intervals": ("SELECT",),
    },
    "dialer": {
        # Share-locked while its calls are recorded: FOR SHARE needs UPDATE on some column,
        # the one whose change does the least harm. The dialer never changes a task.
        "tasks": ("SELECT", "UPDATE (name)"),
        "calls": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "tenant_sip_accounts": ("SELECT",),
    },
    "notifier": {
        "webhook_deliveries": ("SELECT", "INSERT", "UPDATE"),
        "webhook_attempts": ("SELECT", "INSERT"),
        # Signs with tenants' secrets; only the operator (the owner) makes or rotates them.
        "webhook_secrets": ("SELECT",),
    },
}


# The sequences behind a table's identity columns (qualified names, from the catalog).
_IDENTITY_SEQUENCES = """
    SELECT pg_get_serial_sequence(quote_ident(c.relname), a.attname)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relname = %s AND c.relnamespace = 'public'::regnamespace
      AND a.attidentity <> '' AND NOT a.attisdropped
"""


def role_name(database: str, service: str) -> str:
    return f"{database}_{service}"[:63]


def service_url(owner_url: str, service: str, password: str) -> str:
    """The owner's DATABASE_URL with the service's role and password instead."""
    url = make_url(owner_url)
    role = role_name(str(url.database), service)
    return url.set(username=role, password=password).render_as_string(hide_password=False)


class RoleMissing(RuntimeError):
    """A service's role does not exist and the owner may not create it."""


def can_create_roles(owner_url: str) -> bool:
    with psycopg.connect(_libpq(owner_url)) as conn:
        return _may_create_roles(conn)


def _may_create_roles(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def apply(owner_url: str, passwords: Mapping[str, str] | None = None) -> None:
    """Create (or update) every service's role, give it exactly its grants, and set the
    passwords given (LOGIN roles; a role without a password given keeps its own)."""
    with psycopg.connect(_libpq(owner_url), autocommit=False) as conn:
        database = conn.info.dbname
        for service in SERVICES:
            role = sql.Identifier(role_name(database, service))
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (role_name(database, service),)
            ).fetchone()
            if exists is None:
                if not _may_create_roles(conn):
                    raise RoleMissing(
                        f"role {role_name(database, service)} does not exist and "
                        f"{conn.info.user} may not create roles: create it first (on "
                        "Kubernetes the CloudNativePG operator does, from managed.roles)"
                    )
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            password = (passwords or {}).get(service)
            if password is not None:
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
                )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role)
            )
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
            conn.execute(
                sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role)
            )
            # Every service checks the schema version (`alembic current`) before it starts.
            conn.execute(sql.SQL("GRANT SELECT ON alembic_version TO {}").format(role))
            for table, privileges in GRANTS[service].items():
                for privilege in privileges:
                    conn.execute(
                        sql.SQL("GRANT {} ON {} TO {}").format(
                            sql.SQL(privilege), sql.Identifier(table), role
                        )
                    )
                if "INSERT" in privileges:  # identity columns draw from a sequence
                    for (sequence,) in conn.execute(_IDENTITY_SEQUENCES, (table,)):
                        conn.execute(
                            sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                                sql.SQL(sequence), role
                            )
                        )
        conn.commit()


def _libpq(url: str) -> str:
    """A SQLAlchemy-style URL (postgresql+psycopg://) as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.db_roles")
    parser.add_argument(
        "--passwords-from-env",
        action="store_true",
        help="set each role's password from DB_ROLE_PASSWORD_<SERVICE>",
    )
    args = parser.parse_args(argv)
    owner_url = os.environ.get("DATABASE_URL", "")
    if not owner_url:
        print("DATABASE_URL (the schema owner's) is not set", file=sys.stderr)
        return 2
    passwords = None
    if args.passwords_from_env:
        passwords = {
            service: os.environ[f"DB_ROLE_PASSWORD_{service.upper()}"]
            for service in SERVICES
            if f"DB_ROLE_PASSWORD_{service.upper()}" in os.environ
        }
    try:
        apply(owner_url, passwords)
    except RoleMissing as err:
        print(err, file=sys.stderr)
        return 1
    database = make_url(owner_url).database
    print(", ".join(role_name(str(database), s) for s in SERVICES), "granted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
