"""`python -m services.api`: the public gRPC API (Envoy transcodes REST to it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

from services.api.auth import TokenVerifier
from services.api.servicer import TaskSchedulerServicer
from services.api.settings import ApiSettings
from services.common import logs
from services.common.db import make_engine
from services.common.grpcserver import serve
from services.common.metrics import serve_metrics
from services.common.tenancy import TenantDefaults


async def main() -> None:
    settings = ApiSettings()  # type: ignore[call-arg]  # filled from the environment
    logs.configure(settings.log_level)
    serve_metrics(settings.metrics_address)
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    verifier = TokenVerifier.from_file(
        settings.jwks_file, max_lifetime_seconds=settings.token_max_lifetime_seconds
    )
    servicer = TaskSchedulerServicer(
        engine,
        verifier,
        TenantDefaults(),
        revocation_cache_seconds=settings.revocation_cache_seconds,
    )

    def register(server: grpc.aio.Server) -> Iterable[str]:
        scheduler_pb2_grpc.add_TaskSchedulerServicer_to_server(servicer, server)
        return [scheduler_pb2.DESCRIPTOR.services_by_name["TaskScheduler"].full_name]

    await serve(settings.grpc_address, register, on_shutdown=engine.dispose)


if __name__ == "__main__":
    asyncio.run(main())
