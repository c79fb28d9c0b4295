"""Shared fixtures: one real stack (PostgreSQL, NATS, api, Envoy) per test session.

Tests stay independent without resetting the database: each test works as its own
freshly named tenant, and tenants cannot see each other (which is itself under test).
"""

from __future__ import annotations

import contextlib
import json
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


# Ports handed out by this process. The OS forgets a port once the probing socket closes, so
# without this two calls could return overlapping ports before either stack has bound them.
_handed_out: set[int] = set()


def free_port() -> int:
    return free_port_block(1)


def free_port_block(size: int = 10) -> int:
    """A port p such that p .. p+size-1 are all free now and not handed out before in this
    process (replica i listens on p+i)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        block = set(range(base, base + size))
        if base + size > 65535 or block & _handed_out:
            continue
        try:
            with contextlib.ExitStack() as sockets:
                for port in block:
                    sock = sockets.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.update(block)
        return base


# Phones of the simulated telephony backend in tests: numbers choose their behaviour.
SIMULATED_RULES = [
    {"pattern": "*486", "behaviour": "busy", "ring_seconds": 0.05},
    {"pattern": "*480", "behaviour": "no_answer"},
    {"pattern": "*603", "behaviour": "reject", "ring_seconds": 0.05},
    # Long calls, to hold a queue's capacity for a while.
    {"pattern": "*900", "behaviour": "answer", "ring_seconds": 0.05, "talk_seconds": 1.5},
    {"pattern": "*", "behaviour": "answer", "ring_seconds": 0.05, "talk_seconds": 0.1},
]
LONG_CALL_NUMBER = "+15550000900"
BUSY_NUMBER = "+15550000486"
NO_ANSWER_NUMBER = "+15550000480"
REJECT_NUMBER = "+15550000603"


def service_env(**overrides: str) -> dict[str, str]:
    """Service settings for test stacks: fast phones, short ring timeout and lease."""
    env = {
        "DIALER_SIMULATED_RULES": json.dumps(SIMULATED_RULES),
        "DIALER_RING_TIMEOUT_SECONDS": "0.3",
        "DIALER_MAX_CALL_SECONDS": "5",
        "DISPATCHER_ATTEMPT_LEASE_SECONDS": "20",
        # Webhook receivers in tests listen on 127.0.0.1 (plain http, any port from 1024);
        # 127.0.0.2 stays refused, 127.0.0.3 is allowed over https only.
        "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.1/32,127.0.0.3/32",
        "NOTIFIER_HTTP_NETWORKS": "127.0.0.1/32",
        "NOTIFIER_ALLOWED_PORTS": "80,443,1024-65535",
        # A rotated webhook secret signs from the next delivery on.
        "NOTIFIER_SECRET_CACHE_SECONDS": "0",
        "DISPATCHER_STATS_INTERVAL_SECONDS": "0.5",
        "NOTIFIER_READ_TIMEOUT_SECONDS": "1",
        "NOTIFIER_MAX_ATTEMPTS": "3",
        "NOTIFIER_BACKOFF_BASE_SECONDS": "0.2",
        "NOTIFIER_BACKOFF_CAP_SECONDS": "0.5",
        # Tests' tenants dispatch bursts; the quota tests set their tenants' own quotas.
        "TENANT_DEFAULT_CALLS_PER_SECOND": "1000",
        "TENANT_DEFAULT_MAX_IN_PROGRESS": "10000",
        # A revoked token is refused on the next call, not within the cache's seconds.
        "API_REVOCATION_CACHE_SECONDS": "0",
    }
    env.update(overrides)
    return env


def stack_settings(state_dir: Path, **overrides: object) -> StackSettings:
    """Settings for a stack on free loopback ports, with its state in state_dir."""
    values: dict[str, object] = {
        "state_dir": state_dir,
        "rest_port": free_port(),
        "envoy_admin_port": free_port(),
        "api_grpc_port": free_port_block(6),
        "nats_port": free_port(),
        "database_url": None,
        "dispatchers": 3,
        "dialers": 2,
        "dispatcher_grpc_port": free_port_block(),
        "dialer_grpc_port": free_port_block(),
        "notifier_grpc_port": free_port_block(),
        "metrics_port": free_port_block(40),
        # Tests and benchmarks send thousands of requests a second as one client; the rate
        # limit's own tests set it low.
        "client_rate_limit": 1_000_000,
        "client_rate_burst": 1_000_000,
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


def permission_violations(stack: Stack) -> list[str]:
    """Every NATS permission violation a service of `stack` logged (nats-server reports them
    only to the client, asynchronously: the refused request itself just times out). A
    service refused what it needs would otherwise fail slowly and silently."""
    assert stack.log_dir is not None
    return [
        f"{path.name}: {line}"
        for path in sorted(stack.log_dir.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if "permissions violation" in line.lower()
    ]


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
