"""Webhook URLs that would reach the operator's network: the api accepts them (the contract
allows any absolute http/https URL), the notifier refuses them at delivery, before any
connection, and the delivery says why (`failed`, last_error).

The test stack allows 127.0.0.1 (http, ports from 1024) and 127.0.0.3 (https only); see
tests/support/stacks.py `service_env`.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from pytest_httpserver import HTTPServer

from deploy.local.stack import Stack
from tests.support.waiting import wait_for

WAIT = 60  # generous: the machine is shared


@pytest.fixture
def receiver(hook_receiver: HTTPServer) -> HTTPServer:
    """A receiver the guard allows: whatever reaches it was not refused."""
    return hook_receiver


def delivery_of(stack: Stack, api: httpx.Client, tenant: str, url: str) -> dict[str, Any]:
    """Create a task whose `after` webhook goes to `url` (the api must accept it) and
    return its delivery once settled."""
    queue = api.post(f"/client/{tenant}/task_scheduler/", json={"status": "on"}).json()
    task = {"a_number": "+15550007001", "b_number": "+15550007002", "url_after": url}
    created = api.post(
        f"/client/{tenant}/task_scheduler/{queue['id']}/tasks/", json={"tasks": [task]}
    )
    assert created.status_code == 200, created.text
    task_id = created.json()[0]["id"]

    def settled() -> dict[str, Any] | None:
        with psycopg.connect(stack.database_url) as conn:
            row = conn.execute(
                "SELECT status, attempts, last_error FROM webhook_deliveries WHERE task_id = %s",
                (task_id,),
            ).fetchone()
        if row is None or row[0] == "pending":
            return None
        return {"status": row[0], "attempts": row[1], "last_error": row[2]}

    return wait_for(settled, WAIT, f"the delivery to {url} to settle")


@pytest.mark.parametrize(
    ("host", "why"),
    [
        # 6to4 of 127.0.0.1: let through before (not "private" to the old checks).
        ("[2002:7f00:1::1]", "6to4 address of 127.0.0.1, which is a loopback address"),
        # NAT64 of 127.0.0.1 and of the cloud metadata address.
        ("[64:ff9b::7f00:1]", "NAT64 address of 127.0.0.1"),
        ("[64:ff9b::a9fe:a9fe]", "NAT64 address of 169.254.169.254"),
        # IPv4-compatible form of 127.0.0.2 (outside the test stack's allow-list).
        ("[::127.0.0.2]", "IPv4-compatible address of 127.0.0.2"),
    ],
)
def test_an_ipv6_address_carrying_an_internal_ipv4_address_is_refused(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer, host: str, why: str
) -> None:
    delivery = delivery_of(stack, api, tenant, f"http://{host}:{receiver.port}/hook")
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert why in delivery["last_error"]
    assert receiver.log == []


def test_a_port_other_than_80_and_443_is_refused(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    # 127.0.0.1 is allowed to the test stack from port 1024 on; 25 is SMTP.
    delivery = delivery_of(stack, api, tenant, "http://127.0.0.1:25/hook")
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert "port 25 is not allowed" in delivery["last_error"]


def test_plain_http_is_refused_to_an_allowed_network_that_is_not_an_http_one(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    # The https-only rule, tried on loopback: a test must never send traffic off this machine
    # (were the guard broken, a public address would really be posted to). The rule for public
    # addresses is the same code, covered in tests/unit/test_webhook_ssrf.py.
    listening = HTTPServer(host="127.0.0.3", port=0)
    listening.expect_request("/hook").respond_with_data("ok")
    listening.start()
    try:
        delivery = delivery_of(stack, api, tenant, listening.url_for("/hook"))
        assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
        assert "plain http to 127.0.0.3" in delivery["last_error"]
        assert listening.log == []
    finally:
        listening.stop()


def test_the_allowed_receiver_still_gets_its_webhook(
    stack: Stack, api: httpx.Client, tenant: str, receiver: HTTPServer
) -> None:
    """The operator's allow-list (127.0.0.1, http, its port) is what lets the tests run."""
    delivery = delivery_of(stack, api, tenant, receiver.url_for("/hook"))
    assert delivery["status"] == "delivered"
    assert len(receiver.log) == 1
