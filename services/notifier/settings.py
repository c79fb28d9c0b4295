"""Settings of the notifier, read once from the environment."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import WorkerSettings


class NotifierSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_")

    metrics_address: str = "127.0.0.1:9490"
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
    max_in_flight_per_tenant: int = 50
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 600.0
    # A task's event waits this long at most for an earlier one that has not arrived (it
    # always should: JetStream redelivers a message a dead notifier held after 30 s).
    missing_event_wait_seconds: float = 600.0

    @property
    def lease_seconds(self) -> float:
        """A delivery in flight is not taken by another notifier for this long."""
        return self.connect_timeout_seconds + self.read_timeout_seconds + 5.0
