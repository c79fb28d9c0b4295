"""Shared fixtures: one real stack (PostgreSQL, NATS, api, Envoy) per test session.

Tests stay independent without resetting the database: each test works as its own
freshly named tenant, and tenants cannot see each other (which is itself under test).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.stack import Stack, StackSettings

# Scrub what a developer's shell may have set, so that tests start from the defaults.
for _name in ("DATABASE_URL", "REST_PORT", "STATE_DIR", "API_GRPC_PORT", "NATS_PORT"):
    os.environ.pop(_name, None)
# pgserver wants a private runtime dir (mode 0700) for its lock file.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_settings(state_dir: Path, **overrides: object) -> StackSettings:
    """Settings for a stack on free loopback ports, with its state in state_dir."""
    values: dict[str, object] = {
        "state_dir": state_dir,
        "rest_port": free_port(),
        "envoy_admin_port": free_port(),
        "api_grpc_port": free_port(),
        "nats_port": free_port(),
        "database_url": None,
    }
    values.update(overrides)
    return StackSettings.model_validate(values)


StateDirFactory = Callable[[str], Path]


@pytest.fixture(scope="session")
def make_state_dir() -> Iterator[StateDirFactory]:
    """Fresh state folders for stacks, outside pytest's own temp root.

    The embedded PostgreSQL runs as another system user and needs to traverse the path;
    pytest resets its temp root to mode 0700 whenever a pytest session starts.
    """
    root = Path(tempfile.mkdtemp(prefix="callback-scheduler-tests-"))
    root.chmod(0o755)
    counter = 0

    def make(name: str) -> Path:
        nonlocal counter
        counter += 1
        path = root / f"{name}-{counter}"
        path.mkdir()
        return path

    yield make
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(make_state_dir: StateDirFactory) -> Iterator[Stack]:
    state_dir = make_state_dir("stack")
    running = Stack(stack_settings(state_dir), log_dir=state_dir / "logs")
    running.start()
    yield running
    running.stop()


ClientFactory = Callable[..., httpx.Client]


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
