"""Settings of the notifier, read once from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_")

    database_url: str = Field(validation_alias="DATABASE_URL")
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # Copies of each JetStream stream: 3 on a NATS cluster (every service must agree).
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5, validation_alias="NATS_STREAM_REPLICAS"
    )
    grpc_address: str = "127.0.0.1:50080"
    # Master key from which each client's signing secret is derived (a Secret in production).
    signing_key: str
    # Networks webhooks may reach although they are loopback/private/link-local (comma list).
    allowed_networks: str = ""
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    max_response_bytes: int = 64 * 1024
    max_in_flight: int = 200
    max_in_flight_per_host: int = 8
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 600.0
    db_pool_size: int = 5
    # Prometheus /metrics.
    metrics_address: str = "127.0.0.1:9490"
    log_level: str = "INFO"

    @property
    def lease_seconds(self) -> float:
        """A delivery in flight is not taken by another notifier for this long."""
        return self.connect_timeout_seconds + self.read_timeout_seconds + 5.0
