"""Settings of the api service, read once from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.api.auth import DEFAULT_MAX_LIFETIME_SECONDS
from services.common.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="API_")

    grpc_address: str = "127.0.0.1:50051"
    # JWKS document with the public keys that sign bearer tokens.
    jwks_file: Path
    metrics_address: str = "127.0.0.1:9464"
    db_pool_size: int = 10
    # Tokens valid for longer than this (exp - iat) are refused.
    token_max_lifetime_seconds: int = Field(default=DEFAULT_MAX_LIFETIME_SECONDS, gt=0)
    # How long an api process may use a client's revocation time it read (0: read it on
    # every call). A revocation takes effect within this long.
    revocation_cache_seconds: float = Field(default=5.0, ge=0)
