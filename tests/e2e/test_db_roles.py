"""Each service logs in to PostgreSQL as its own role, with only the grants it needs: what a
service must not do, PostgreSQL itself refuses (the stack's services run as these roles, so
every other test proves that what they must do is granted)."""

from __future__ import annotations

import psycopg
import pytest

from deploy.local.stack import Stack
from services.common.db_roles import SERVICES


def test_every_service_runs_as_its_own_role_not_the_owner(stack: Stack) -> None:
    urls = {service: stack.service_database_url(service) for service in SERVICES}

    users = {}
    for service, url in urls.items():
        with psycopg.connect(url) as conn:
            users[service] = conn.execute("SELECT current_user").fetchone()
    with psycopg.connect(stack.database_url) as conn:
        owner = conn.execute("SELECT current_user").fetchone()

    assert len(set(users.values())) == len(SERVICES)
    assert owner not in users.values()


@pytest.mark.parametrize(
    ("service", "statement"),
    [
        # The notifier talks to the internet: no tasks, calls or SIP passwords for it.
        ("notifier", "SELECT a_number FROM tasks LIMIT 1"),
        ("notifier", "SELECT * FROM calls LIMIT 1"),
        ("notifier", "SELECT password FROM tenant_sip_accounts LIMIT 1"),
        ("notifier", "INSERT INTO outbox (subject, msg_id, payload) VALUES ('x', 'x', '')"),
        # It signs with the tenants' webhook secrets; only the operator makes or rotates them.
        (
            "notifier",
            "INSERT INTO webhook_secrets (client_id, version, sealed) VALUES ('x', 1, '')",
        ),
        ("notifier", "UPDATE webhook_secrets SET retires_at = now() WHERE client_id = 'x'"),
        ("notifier", "DELETE FROM webhook_secrets WHERE client_id = 'x'"),
        # Nobody else reads them.
        ("api", "SELECT sealed FROM webhook_secrets LIMIT 1"),
        ("dispatcher", "SELECT sealed FROM webhook_secrets LIMIT 1"),
        ("dialer", "SELECT sealed FROM webhook_secrets LIMIT 1"),
        # The dialer places calls: it may not decide a task's fate or publish messages.
        ("dialer", "UPDATE tasks SET status = 'finished' WHERE id = -1"),
        ("dialer", "DELETE FROM tasks WHERE id = -1"),
        ("dialer", "SELECT * FROM webhook_deliveries LIMIT 1"),
        ("dialer", "INSERT INTO outbox (subject, msg_id, payload) VALUES ('x', 'x', '')"),
        # The api sees which extensions a tenant owns, never their passwords.
        ("api", "SELECT password FROM tenant_sip_accounts LIMIT 1"),
        ("api", "INSERT INTO outbox (subject, msg_id, payload) VALUES ('x', 'x', '')"),
        ("api", "UPDATE calls SET result = 'connected' WHERE call_uuid = 'x'"),
        ("api", "SELECT * FROM webhook_deliveries LIMIT 1"),
        # The dispatcher never needs the SIP accounts, nor to change a queue.
        ("dispatcher", "SELECT password FROM tenant_sip_accounts LIMIT 1"),
        ("dispatcher", "UPDATE queues SET status = 'off' WHERE id = -1"),
        ("dispatcher", "UPDATE queues SET concurrent_task_limit = 1 WHERE id = -1"),
        # Calling windows: the api writes them, the dispatcher only reads them.
        ("dispatcher", "UPDATE intervals SET name = 'x' WHERE id = -1"),
        ("dispatcher", "DELETE FROM intervals WHERE id = -1"),
        (
            "dispatcher",
            "INSERT INTO intervals (client_id, name, timezone, conditions) "
            "VALUES ('x', '', 'UTC', '[]')",
        ),
        ("dispatcher", "UPDATE queues SET interval_id = NULL WHERE id = -1"),
        ("dialer", "SELECT * FROM intervals LIMIT 1"),
        ("notifier", "SELECT * FROM intervals LIMIT 1"),
        # Nobody but the owner changes the schema or the tenants' telephony.
        ("dispatcher", "DROP TABLE webhook_attempts"),
        ("api", "INSERT INTO tenant_caller_ids (client_id, number) VALUES ('x', '+1')"),
    ],
)
def test_a_service_role_is_refused_what_it_must_not_do(
    stack: Stack, service: str, statement: str
) -> None:
    with psycopg.connect(stack.service_database_url(service)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_owner_is_not_refused_those_reads(stack: Stack) -> None:
    """The refusals above are the roles', not statements that fail for everyone."""
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("SELECT a_number FROM tasks LIMIT 1")
        conn.execute("SELECT password FROM tenant_sip_accounts LIMIT 1")
        conn.execute("SELECT * FROM webhook_deliveries LIMIT 1")
        conn.execute("SELECT sealed FROM webhook_secrets LIMIT 1")


def test_the_notifier_reads_webhook_secrets(stack: Stack) -> None:
    with psycopg.connect(stack.service_database_url("notifier")) as conn:
        conn.execute("SELECT version, sealed FROM webhook_secrets LIMIT 1")


def test_the_dispatcher_reads_intervals(stack: Stack) -> None:
    with psycopg.connect(stack.service_database_url("dispatcher")) as conn:
        conn.execute("SELECT id, client_id, timezone, conditions FROM intervals LIMIT 1")
        conn.execute("SELECT interval_id FROM queues LIMIT 1")
