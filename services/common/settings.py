"""Settings every service reads. Shared names (DATABASE_URL, NATS_*) have no prefix; the
rest take the subclass's prefix (API_, DISPATCHER_, ...).

Secrets never reach a log or an error message: passwords, keys and URLs that may carry a
password are `SecretStr` (printed as `**********`; `.get_secret_value()` where they are
used), and a setting that fails validation is named in the error without its value
(`hide_input_in_errors`: pydantic would otherwise print the value, or for a check of the
whole model every setting's)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.bus import NatsLogin

# Every settings class of the services, and the models nested in them, use this.
SECRET_SAFE = SettingsConfigDict(hide_input_in_errors=True)


class ServiceSettings(BaseSettings):
    model_config = SECRET_SAFE

    # A URL with the role's password in it.
    database_url: SecretStr = Field(validation_alias="DATABASE_URL")
    # gRPC server (the api's service, or only the standard health service for probes).
    grpc_address: str
    # Prometheus /metrics.
    metrics_address: str
    db_pool_size: int = 5
    log_level: str = "INFO"


class WorkerSettings(ServiceSettings):
    """The services that also work through NATS JetStream."""

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # Copies of each JetStream stream: 3 on a NATS cluster (every service must agree).
    nats_stream_replicas: int = Field(
        default=1, ge=1, le=5, validation_alias="NATS_STREAM_REPLICAS"
    )
    # This service's NATS user (deploy/nats_users.py: what each may publish and subscribe to).
    # Unset: anonymous, for a NATS without users.
    nats_user: str | None = Field(default=None, validation_alias="NATS_USER")
    nats_password: SecretStr | None = Field(default=None, validation_alias="NATS_PASSWORD")
    # TLS to NATS (a tls:// NATS_URL): the CA that signed the server's certificate.
    nats_tls_ca_file: Path | None = Field(default=None, validation_alias="NATS_TLS_CA_FILE")

    def nats_login(self) -> NatsLogin:
        return NatsLogin(self.nats_user, self.nats_password, self.nats_tls_ca_file)
