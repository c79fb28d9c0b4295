"""Settings of the api service, read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_")

    # Shared with every service, hence no prefix.
    database_url: str = Field(validation_alias="DATABASE_URL")
    grpc_address: str = "127.0.0.1:50051"
    # JWKS document with the public keys that sign bearer tokens.
    jwks_file: Path
    db_pool_size: int = 10
    # Prometheus /metrics.
    metrics_address: str = "127.0.0.1:9464"
    log_level: str = "INFO"
