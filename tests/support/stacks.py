"""Settings of the whole-system stacks (PostgreSQL, NATS, api, Envoy, services) that e2e tests
and benchmarks start, and what to check in their logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from deploy.local.stack import Stack, StackSettings
from tests.support.ports import free_port, free_port_block
from tests.support.simulated_phones import SIMULATED_RULES

# A fresh state folder for a stack, named after its use (the `make_state_dir` fixture).
StateDirFactory = Callable[[str], Path]
# httpx clients on a stack's REST API, authenticated as a client (the `make_client` fixture).
ClientFactory = Callable[..., httpx.Client]


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
