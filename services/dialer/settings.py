"""Settings of the dialer, read once from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import SettingsConfigDict

from services.common.settings import WorkerSettings
from services.dialer.simulated import DEFAULT_RULES, Rule


class DialerSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="DIALER_")

    metrics_address: str = "127.0.0.1:9480"
    grpc_address: str = "127.0.0.1:50053"
    backend: Literal["simulated"] = "simulated"
    max_concurrent_calls: int = 1000
    # Keep ring timeout + max call duration below the dispatcher's attempt lease.
    ring_timeout_seconds: float = 60.0
    max_call_seconds: float = 3600.0
    # JSON list of {"pattern", "behaviour", "ring_seconds", "talk_seconds"}; first match wins.
    simulated_rules: tuple[Rule, ...] = DEFAULT_RULES
    # How long to keep retrying to report a result while NATS or PostgreSQL is down.
    report_retry_seconds: float = 600.0
