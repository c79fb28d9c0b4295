"""Settings of the dispatcher, read once from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DispatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHER_")

    database_url: str = Field(validation_alias="DATABASE_URL")
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # Copies of each JetStream stream: 3 on a NATS cluster (every service must agree).
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5, validation_alias="NATS_STREAM_REPLICAS"
    )
    # Health (standard gRPC health service) for probes.
    grpc_address: str = "127.0.0.1:50052"
    # An attempt without a result after this long counts as lost (failed). It must exceed
    # the longest call a dialer allows (ring timeout + maximum call duration).
    attempt_lease_seconds: float = 3900.0
    # Tasks claimed per queue per pass: bounds one transaction, and keeps queues fair.
    claim_batch: int = 200
    # Call results applied per transaction.
    result_batch: int = 200
    outbox_batch: int = 500
    # Safety net only: wake-ups come from LISTEN/NOTIFY and the timer to the next due time.
    max_idle_seconds: float = 30.0
    # How often the tasks-by-status and consumer-lag gauges are refreshed.
    stats_interval_seconds: float = 15.0
    db_pool_size: int = 5
    # Prometheus /metrics.
    metrics_address: str = "127.0.0.1:9470"
    log_level: str = "INFO"
