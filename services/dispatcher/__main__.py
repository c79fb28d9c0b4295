"""`python -m services.dispatcher`: scheduling, retries and task state (any number of replicas)."""

from __future__ import annotations

import asyncio
import contextlib

from services.common import bus
from services.common.bootstrap import start_worker
from services.common.grpcserver import serve
from services.common.supervision import exit_when_failed
from services.common.tenancy import TenantDefaults
from services.common.wakeup import listen_forever
from services.dispatcher.consumer import CallEventConsumer
from services.dispatcher.housekeeping import purge_forever
from services.dispatcher.outbox import OutboxPublisher
from services.dispatcher.repository import WAKE_CHANNEL
from services.dispatcher.scheduler import Scheduler
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.stats import refresh_forever
from services.dispatcher.wakeups import Wakeups


async def main() -> None:
    settings = DispatcherSettings()  # type: ignore[call-arg]  # filled from the environment
    engine, nats_client, jetstream = await start_worker(settings, "dispatcher", create_streams=True)

    wakeups = Wakeups(settings.lookahead_seconds)
    publisher = OutboxPublisher(engine, jetstream, settings.outbox_batch)
    scheduler = Scheduler(engine, settings, wakeups, publisher.ready, TenantDefaults())
    consumer = CallEventConsumer(engine, jetstream, settings.result_batch, publisher.ready)
    listener = asyncio.create_task(
        listen_forever(settings.database_url.get_secret_value(), WAKE_CHANNEL, wakeups.notify)
    )
    stats = asyncio.create_task(refresh_forever(engine, jetstream, settings.stats_interval_seconds))
    housekeeping = asyncio.create_task(
        purge_forever(engine, settings.retention_days, settings.housekeeping_interval_seconds)
    )
    workers = [
        asyncio.create_task(scheduler.run()),
        asyncio.create_task(consumer.run()),
        asyncio.create_task(publisher.run()),
    ]

    async def shutdown() -> None:
        # Claim nothing more, apply what was fetched, publish what was committed.
        scheduler.stop()
        consumer.stop()
        publisher.stop()
        await asyncio.wait(workers, timeout=10)
        with contextlib.suppress(Exception):
            await publisher.flush()
        listener.cancel()
        stats.cancel()
        housekeeping.cancel()
        for worker in workers:
            worker.cancel()
        await bus.close(nats_client)
        await engine.dispose()

    for worker in workers:
        worker.add_done_callback(exit_when_failed)
    # The stop: the grace of the gRPC server (10 s), the workers' (10 s), then the flush.
    await serve(
        settings.grpc_address,
        lambda server: [],
        on_shutdown=shutdown,
        shutdown_deadline_seconds=45.0,
    )


if __name__ == "__main__":
    asyncio.run(main())
