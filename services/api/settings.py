"""Settings of the api service, read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="API_")

    grpc_address: str = "127.0.0.1:50051"
    # JWKS document with the public keys that sign bearer tokens.
    jwks_file: Path
    metrics_address: str = "127.0.0.1:9464"
    db_pool_size: int = 10
