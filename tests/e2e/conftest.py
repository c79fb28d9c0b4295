"""Fixtures of the e2e tier: one real stack (PostgreSQL, NATS, api, Envoy, the services) per
test session, REST clients on it, and a webhook receiver (pytest finds them here; nothing
imports this; helpers live in tests/support/).

Tests stay independent without resetting the database: each test works as its own
freshly named tenant, and tenants cannot see each other (which is itself under test).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from pytest_httpserver import HTTPServer

from deploy.local.stack import Stack
from tests.support.stacks import (
    ClientFactory,
    StateDirFactory,
    permission_violations,
    service_env,
    stack_settings,
)


@pytest.fixture
def hook_receiver() -> Iterator[HTTPServer]:
    """A webhook receiver on loopback that answers every POST to /hook with 200."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook", method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="session")
def stack(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("stack")
    # Two api processes, three dispatchers and two dialers: every test runs against replicas.
    running = Stack(
        stack_settings(state_dir, apis=2),
        log_dir=state_dir / "logs",
        service_env=service_env(),
    )
    running.start()
    yield running
    running.stop()
    assert permission_violations(running) == []


@pytest.fixture
def tenant() -> str:
    """A client_id no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_client(stack: Stack) -> Iterator[ClientFactory]:
    """httpx clients on the REST API through Envoy, authenticated as a given client."""
    clients: list[httpx.Client] = []

    def make(client_id: str | None = None, *, token: str | None = None) -> httpx.Client:
        headers = {}
        if token is None and client_id is not None:
            token = stack.token(client_id)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=stack.rest_url, headers=headers, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(make_client: ClientFactory, tenant: str) -> httpx.Client:
    """A REST client authenticated as this test's tenant."""
    return make_client(tenant)
