"""`python -m services.dialer`: places calls through a telephony backend (many replicas)."""

from __future__ import annotations

import asyncio

from services.common import bus
from services.common.bootstrap import start_worker
from services.common.grpcserver import serve
from services.common.supervision import exit_when_failed
from services.dialer.backend import TelephonyBackend
from services.dialer.consumer import Dialer
from services.dialer.heap import freeze_startup_heap
from services.dialer.settings import DialerSettings
from services.dialer.simulated import SimulatedBackend
from services.dialer.sip import tls
from services.dialer.sip.backend import SipBackend, parse_address
from services.dialer.sip.leg import Account
from services.dialer.sip.ua import Route


async def open_backend(settings: DialerSettings) -> TelephonyBackend:
    if settings.backend == "simulated":
        return SimulatedBackend(
            settings.simulated_rules,
            ring_timeout_seconds=settings.ring_timeout_seconds,
            max_call_seconds=settings.max_call_seconds,
            seed=settings.simulated_seed,
        )
    # SIP over TLS listens on 5061 unless told otherwise (RFC 3261 19.1.2).
    port = 5061 if settings.sip_transport == "tls" else 5060
    routes = [
        Route(r.pattern, parse_address(r.proxy, port), r.domain or parse_address(r.proxy).host)
        for r in settings.sip_routes
    ]
    if settings.sip_proxy:
        proxy = parse_address(settings.sip_proxy, port)
        routes.append(Route("*", proxy, settings.sip_domain or proxy.host))
    tls_client = tls_server = None
    if settings.sip_transport == "tls":
        # Read now: a missing or unreadable file stops the start with the file's name.
        tls_client = tls.client_context(
            settings.sip_tls_ca_file, settings.sip_tls_cert_file, settings.sip_tls_key_file
        )
        if settings.sip_tls_cert_file:
            tls_server = tls.server_context(settings.sip_tls_cert_file, settings.sip_tls_key_file)
    return await SipBackend.open(
        transport=settings.sip_transport,
        listen=settings.sip_listen,
        advertise=settings.sip_advertise,
        routes=tuple(routes),
        accounts={
            k: Account(a.username, a.password.get_secret_value())
            for k, a in settings.sip_accounts.items()
        },
        assert_identity=settings.sip_assert_identity,
        socket_buffer_bytes=settings.sip_socket_buffer_bytes,
        ring_timeout_seconds=settings.ring_timeout_seconds,
        max_call_seconds=settings.max_call_seconds,
        calls_per_second=settings.sip_calls_per_second,
        tls_client=tls_client,
        tls_server=tls_server,
    )


async def main() -> None:
    settings = DialerSettings()  # type: ignore[call-arg]  # filled from the environment
    engine, nats_client, jetstream = await start_worker(settings, "dialer")
    backend = await open_backend(settings)
    dialer = Dialer(engine, jetstream, backend, settings)
    # What startup allocated lives as long as the process: out of the collector's reach, so
    # that a full collection during a second's burst of calls walks only the calls' objects.
    freeze_startup_heap()  # the SIP backend has done so already when it opened: once only
    worker = asyncio.create_task(dialer.run())

    worker.add_done_callback(exit_when_failed)

    async def shutdown() -> None:
        # Calls in progress finish first (and report); no new call starts.
        dialer.stop()
        await dialer.calls_finished()
        if isinstance(backend, SipBackend):
            backend.close()
        worker.cancel()
        await bus.close(nats_client)
        await engine.dispose()

    await serve(
        settings.grpc_address,
        lambda server: [],
        on_shutdown=shutdown,
        grace_seconds=1.0,
        # Calls in progress are allowed to end before the dialer does.
        shutdown_deadline_seconds=settings.longest_call_seconds + 30.0,
    )


if __name__ == "__main__":
    asyncio.run(main())
