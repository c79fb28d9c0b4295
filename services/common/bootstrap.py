"""Start-up shared by the NATS workers (dispatcher, dialer, notifier)."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus, logs
from services.common.db import make_engine
from services.common.metrics import serve_metrics
from services.common.settings import WorkerSettings


async def start_worker(
    settings: WorkerSettings, name: str, *, create_streams: bool = False
) -> tuple[AsyncEngine, NATS, JetStreamContext]:
    """Logs, /metrics, a database engine and a NATS connection as the service's NATS user
    (with the streams in place if `create_streams`: the dispatcher's job).

    No pre-ping on the engine: workers retry failed transactions by themselves."""
    logs.configure(settings.log_level)
    serve_metrics(settings.metrics_address)
    engine = make_engine(
        settings.database_url.get_secret_value(), pool_size=settings.db_pool_size, pre_ping=False
    )
    nats_client, jetstream = await bus.connect(
        settings.nats_url,
        name,
        settings.nats_login(),
        create_streams=create_streams,
        stream_replicas=settings.nats_stream_replicas,
    )
    return engine, nats_client, jetstream
