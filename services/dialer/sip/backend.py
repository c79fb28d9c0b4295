"""The `sip` telephony backend: callbacks as real SIP calls through a trunk, PBX or phones.

One UDP socket (or TCP listener) per dialer; every callback runs as RFC 3725 third-party call
control (see callback.py). Settings: DIALER_SIP_* in services/dialer/settings.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from datetime import UTC, datetime

from services.common.vocabulary import CallOutcome
from services.dialer.backend import CallPlan, CallReport, OnConnected, limit
from services.dialer.heap import freeze_startup_heap
from services.dialer.pacing import Pacer
from services.dialer.sip import tls
from services.dialer.sip.callback import Callback
from services.dialer.sip.leg import Account
from services.dialer.sip.message import Address, Message
from services.dialer.sip.transport import TcpTransport, TlsTransport, Transport, UdpTransport
from services.dialer.sip.ua import Route, UserAgent

log = logging.getLogger(__name__)


def parse_address(text: str, default_port: int = 5060) -> Address:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return Address(host or "0.0.0.0", int(port) if port else default_port)


def outgoing_address(towards: Address) -> str:
    """The local address the kernel would use to reach `towards` (a UDP connect sends
    nothing): what Via and Contact advertise when listening on 0.0.0.0."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((towards.host, towards.port))
        return str(probe.getsockname()[0])


class SipBackend:
    name = "sip"

    def __init__(
        self,
        ua: UserAgent,
        accounts: dict[int, Account],
        *,
        assert_identity: bool,
        ring_timeout_seconds: float,
        max_call_seconds: float,
        calls_per_second: float = 0.0,
    ) -> None:
        self.ua = ua
        # At most `calls_per_second` new calls in any second; below that, no wait at all.
        self._pacer = Pacer(calls_per_second)
        self._accounts = accounts
        self._assert_identity = assert_identity
        self._ring_timeout = ring_timeout_seconds
        self._max_call = max_call_seconds
        # Calls built ahead of their due time (prepare_call), by call_uuid, until placed or
        # forgotten; a plan that cannot be called is kept as its error report.
        self._prepared: dict[str, Callback | CallReport] = {}

    @classmethod
    async def open(
        cls,
        *,
        transport: str,
        listen: str,
        advertise: str,
        routes: tuple[Route, ...],
        accounts: dict[int, Account],
        assert_identity: bool,
        socket_buffer_bytes: int,
        ring_timeout_seconds: float,
        max_call_seconds: float,
        calls_per_second: float = 0.0,
        tls_client: ssl.SSLContext | None = None,
        tls_server: ssl.SSLContext | None = None,
    ) -> SipBackend:
        """`tls_client`: the context of TLS connections (default: the system's CAs, names
        checked); `tls_server`: our certificate's, for a TLS listener (none without)."""
        freeze_startup_heap()  # the dialer opens its backend once it has imported everything
        bind = parse_address(listen)
        if not advertise and bind.host == "0.0.0.0" and routes:
            advertise = outgoing_address(routes[-1].proxy)
        ua_box: list[UserAgent] = []

        def on_message(message: Message, source: Address) -> None:
            ua_box[0].receive(message, source)

        def on_error(destination: Address, error: str) -> None:
            ua_box[0].transport_failed(destination, error)

        sip_transport: Transport
        if transport == "tls":
            sip_transport = await TlsTransport.bind_tls(
                bind,
                advertise,
                on_message,
                on_error,
                socket_buffer_bytes,
                client=tls_client or tls.client_context(),
                server=tls_server,
            )
        else:
            kind = TcpTransport if transport == "tcp" else UdpTransport
            sip_transport = await kind.bind(
                bind, advertise, on_message, on_error, socket_buffer_bytes
            )
        ua = UserAgent(sip_transport, routes)
        ua_box.append(ua)
        local = sip_transport.local
        address = f"{local.host}:{local.port}"
        log.info("SIP ready", extra={"action": "sip_ready", "transport": transport, "at": address})
        return cls(
            ua,
            accounts,
            assert_identity=assert_identity,
            ring_timeout_seconds=ring_timeout_seconds,
            max_call_seconds=max_call_seconds,
            calls_per_second=calls_per_second,
        )

    def close(self) -> None:
        self.ua.transport.close()

    def reserve_start(self, at: float) -> float:
        return self._pacer.reserve(at)

    def prepare_call(self, plan: CallPlan) -> None:
        """Build the callback and its A legs' INVITEs (encoded) before the call is due."""
        if plan.call_uuid not in self._prepared:
            self._prepared[plan.call_uuid] = self._callback(plan)

    def start_call(self, call_uuid: str) -> None:
        callback = self._prepared.get(call_uuid)
        if isinstance(callback, Callback):
            callback.start()

    def forget_call(self, call_uuid: str) -> None:
        self._prepared.pop(call_uuid, None)

    def _callback(self, plan: CallPlan) -> Callback | CallReport:
        # The tenant's own account, else the operator's default: the dialer never passes
        # an extension other than 0 without the tenant's account for it.
        account = Account(*plan.account) if plan.account else self._accounts.get(0)
        try:
            return Callback(
                self.ua,
                plan,
                account,
                assert_identity=self._assert_identity,
                # The task's limits, within the dialer's.
                ring_timeout=limit(plan.ring_timeout, self._ring_timeout),
                max_call=limit(plan.max_call, self._max_call),
            )
        except (LookupError, ValueError) as err:  # no route for a number, or not a number
            now = datetime.now(UTC)
            return CallReport(outcome=CallOutcome.ERROR, comment=str(err), started=now, ended=now)

    async def place_call(self, plan: CallPlan, on_connected: OnConnected) -> CallReport:
        callback = self._prepared.pop(plan.call_uuid, None)
        if callback is None:  # not prepared (called directly): paced here
            wait = self._pacer.reserve(time.time()) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            callback = self._callback(plan)
        if isinstance(callback, CallReport):
            return callback
        try:
            return await callback.run(on_connected)
        except Exception as err:
            # A defect here must not lose the call: it is reported as an error with its legs.
            log.exception("callback failed", extra={"action": "sip_error"})
            return callback.report(CallOutcome.ERROR, f"internal error: {err}")
