"""`python -m services.notifier`: delivers webhooks for task events (many replicas)."""

from __future__ import annotations

import asyncio

from services.common import bus
from services.common.bootstrap import start_worker
from services.common.grpcserver import serve
from services.common.supervision import exit_when_failed
from services.common.wakeup import listen_forever
from services.notifier.consumer import EventConsumer
from services.notifier.repository import WAKE_CHANNEL
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings
from services.notifier.transport import make_client


async def main() -> None:
    settings = NotifierSettings()  # type: ignore[call-arg]  # filled from the environment
    engine, nats_client, jetstream = await start_worker(settings, "notifier")
    client = make_client(
        settings.address_policy,
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        max_connections=settings.max_in_flight,
    )
    wake = asyncio.Event()
    consumer = EventConsumer(engine, jetstream)
    sender = Sender(engine, client, settings, wake)
    listener = asyncio.create_task(
        listen_forever(settings.database_url.get_secret_value(), WAKE_CHANNEL, lambda _: wake.set())
    )
    workers = [asyncio.create_task(consumer.run()), asyncio.create_task(sender.run())]

    for worker in workers:
        worker.add_done_callback(exit_when_failed)

    async def shutdown() -> None:
        consumer.stop()
        sender.stop()
        await asyncio.wait(workers, timeout=5)
        # Deliveries in flight finish (bounded by their timeouts) or are retried elsewhere.
        await asyncio.wait_for(sender.finished(), timeout=settings.lease_seconds)
        listener.cancel()
        await bus.close(nats_client)
        await client.aclose()
        await engine.dispose()

    await serve(
        settings.grpc_address,
        lambda server: [],
        on_shutdown=shutdown,
        grace_seconds=1.0,
        # The workers' 5 s, then the deliveries in flight (one lease at most), then closing.
        shutdown_deadline_seconds=settings.lease_seconds + 15.0,
    )


if __name__ == "__main__":
    asyncio.run(main())
