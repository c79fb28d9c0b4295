"""Per-tenant webhook secrets end to end: the real notifier signs, a real receiver verifies,
the operator rotates with the real admin command (python -m services.notifier.admin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request

from deploy.local.keys import ensure_webhook_signing_key
from deploy.local.stack import ROOT, Stack
from services.notifier.signing import client_secret, sign, verify
from tests.support.waiting import wait_for

WAIT = 60  # generous: the machine is shared


@pytest.fixture
def receiver(hook_receiver: HTTPServer) -> HTTPServer:
    """The shared loopback receiver (tests/e2e/conftest.py)."""
    return hook_receiver


def secret_admin(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The operator's command, as the schema owner with the master key."""
    return subprocess.run(
        [sys.executable, "-m", "services.notifier.admin", "secret", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": stack.database_url,
            "NOTIFIER_SIGNING_KEY": ensure_webhook_signing_key(stack.settings.state_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def webhook(stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer) -> Request:
    """Run a task whose `after` webhook goes to the receiver; the request it received."""
    seen = len(receiver.log)
    queue = api.post(f"/client/{tenant}/task_scheduler/", json={"status": "on"}).json()
    task = {"a_number": "+15550007001", "b_number": "+15550007002"}
    created = api.post(
        f"/client/{tenant}/task_scheduler/{queue['id']}/tasks/",
        json={"tasks": [task | {"url_after": receiver.url_for("/hook")}]},
    )
    assert created.status_code == 200, created.text
    wait_for(lambda: len(receiver.log) > seen, WAIT, "the webhook")
    request: Request = receiver.log[seen][0]
    return request


def signatures(request: Request) -> list[str]:
    return request.headers["X-Callback-Signatures"].split(",")


def verifies(secret: str, request: Request, header: str = "X-Callback-Signatures") -> bool:
    timestamp = request.headers["X-Callback-Timestamp"]
    return verify(secret, timestamp, request.get_data(), request.headers[header], now=time.time())


def listed(stack: Stack, tenant: str) -> list[dict[str, Any]]:
    out = secret_admin(stack, "list", tenant).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_a_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new_one(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    # Before any rotation: the secret every tenant had (derived from the master key), as
    # version 1, in both headers; what receivers verified before keeps verifying.
    derived = client_secret(ensure_webhook_signing_key(stack.settings.state_dir), tenant)
    assert secret_admin(stack, "show", tenant).stdout.strip() == derived
    before = webhook(stack, api, tenant, receiver)
    assert signatures(before) == [before.headers["X-Callback-Signature"]]
    assert verifies(derived, before) and verifies(derived, before, "X-Callback-Signature")

    rotated = json.loads(secret_admin(stack, "rotate", tenant, "--overlap-hours", "24").stdout)
    new = rotated["secret"]
    assert (rotated["version"], rotated["previous_version"]) == (2, 1)
    assert len(new) == 64 and new != derived
    assert secret_admin(stack, "show", tenant).stdout.strip() == new
    states = [(v["version"], v["state"]) for v in listed(stack, tenant)]
    assert states == [(2, "current"), (1, "overlap")]
    assert not any(new in json.dumps(v) or derived in json.dumps(v) for v in listed(stack, tenant))

    # The overlap: both signatures, newest first; a receiver holding either secret accepts;
    # the single-value header still carries the old secret's.
    during = webhook(stack, api, tenant, receiver)
    timestamp = int(during.headers["X-Callback-Timestamp"])
    assert signatures(during) == [
        sign(new, timestamp, during.get_data()),
        sign(derived, timestamp, during.get_data()),
    ]
    assert verifies(new, during) and verifies(derived, during)
    assert verifies(derived, during, "X-Callback-Signature")

    # The overlap ends (here by the operator, as when the tenant confirms the switch): only
    # the new secret signs.
    secret_admin(stack, "retire", tenant)
    assert [(v["version"], v["state"]) for v in listed(stack, tenant)] == [
        (2, "current"),
        (1, "retired"),
    ]
    after = webhook(stack, api, tenant, receiver)
    assert signatures(after) == [after.headers["X-Callback-Signature"]]
    assert verifies(new, after) and verifies(new, after, "X-Callback-Signature")
    assert not verifies(derived, after)


def test_a_rotation_without_overlap_and_a_second_rotation(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    first = json.loads(secret_admin(stack, "rotate", tenant).stdout)["secret"]
    second = json.loads(secret_admin(stack, "rotate", tenant, "--overlap-hours", "0").stdout)
    assert second["version"] == 3
    request = webhook(stack, api, tenant, receiver)
    assert len(signatures(request)) == 1
    assert verifies(second["secret"], request) and not verifies(first, request)
    states = [(v["version"], v["state"]) for v in listed(stack, tenant)]
    assert states == [(3, "current"), (2, "retired"), (1, "retired")]


def test_one_tenants_rotation_leaves_the_others_alone(
    stack: Stack, api: httpx.Client, make_client: Any, tenant: str, receiver: HTTPServer
) -> None:
    other = f"{tenant}-other"
    other_secret = client_secret(ensure_webhook_signing_key(stack.settings.state_dir), other)
    secret_admin(stack, "rotate", tenant, "--overlap-hours", "0")
    request = webhook(stack, make_client(other), other, receiver)
    assert signatures(request) == [request.headers["X-Callback-Signature"]]
    assert verifies(other_secret, request)
    assert [v["version"] for v in listed(stack, other)] == [1]


def test_secrets_are_stored_sealed_and_only_the_owner_writes_them(
    stack: Stack, tenant: str
) -> None:
    new = json.loads(secret_admin(stack, "rotate", tenant).stdout)["secret"]
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT version, sealed FROM webhook_secrets WHERE client_id = %s ORDER BY version",
            (tenant,),
        ).fetchall()
    assert [version for version, _ in rows] == [1, 2]
    for _, sealed in rows:
        assert new.encode() not in sealed and bytes.fromhex(new) not in sealed
    # The notifier reads them (it signs) and may change nothing.
    with psycopg.connect(stack.service_database_url("notifier")) as conn:
        assert conn.execute(
            "SELECT count(*) FROM webhook_secrets WHERE client_id = %s", (tenant,)
        ).fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "UPDATE webhook_secrets SET retires_at = now() WHERE client_id = %s", (tenant,)
            )


def test_the_secret_commands_need_the_master_key(stack: Stack, tenant: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.notifier.admin", "secret", "show", tenant],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "NOTIFIER_SIGNING_KEY"},
            "DATABASE_URL": stack.database_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "NOTIFIER_SIGNING_KEY" in result.stderr
