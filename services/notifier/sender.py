"""Delivers queued webhooks: signed POSTs, bounded in all, per host and per tenant, retried
by the policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.retry import retry
from services.notifier import repository
from services.notifier.keyring import SecretUnreadable
from services.notifier.limits import Caps, InFlight, Room
from services.notifier.policy import DELIVERED, RETRY, RetryPolicy, Verdict, judge
from services.notifier.settings import NotifierSettings
from services.notifier.signing import TIMESTAMP_HEADER, signature_headers
from services.notifier.tenant_secrets import TenantSecrets
from services.notifier.transport import AddressRefused

log = logging.getLogger(__name__)

# At most this many deliveries per claim: a claim holds its row locks until it commits.
CLAIM_BATCH = 100
# An attempt's record is given up (the delivery is then tried again once its lease runs
# out) when the database has been unavailable this long: six tries, 6.2 s of sleeps.
RECORD_GIVE_UP = 6.0
# The longest the sender sleeps without a wake-up (new deliveries and ended ones wake it).
MAX_SLEEP_SECONDS = 30.0


class Sender:
    def __init__(
        self,
        engine: AsyncEngine,
        client: httpx.AsyncClient,
        settings: NotifierSettings,
        wake: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._client = client
        self._settings = settings
        self._policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            max_age_seconds=settings.max_age_seconds,
            base_seconds=settings.backoff_base_seconds,
            cap_seconds=settings.backoff_cap_seconds,
        )
        self._wake = wake
        self._secrets = TenantSecrets(
            engine, settings.signing_key.get_secret_value(), settings.secret_cache_seconds
        )
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = InFlight(
            Caps(
                total=settings.max_in_flight,
                per_host=settings.max_in_flight_per_host,
                per_tenant=settings.max_in_flight_per_tenant,
            )
        )
        # {delivery id: attempt} of the deliveries in flight whose lease is renewed; the lock
        # keeps a renewal from landing after a delivery's outcome was recorded.
        self._leases: dict[int, int] = {}
        self._leases_lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def slots(self) -> InFlight:
        """What is in flight, per host and per tenant."""
        return self._slots

    async def finished(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    async def run(self) -> None:
        self._renewer = asyncio.create_task(self._renew_leases())
        while not self._stopping:
            self._wake.clear()
            room = self._slots.room(CLAIM_BATCH)
            try:
                if room.total == 0:
                    delay = MAX_SLEEP_SECONDS  # full: a delivery that ends wakes the sender
                elif self._more_may_be_due(room, await self._claim(room)):
                    continue
                else:
                    delay = await self._seconds_until_next_due(room)
            except StorageUnavailable:
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _more_may_be_due(self, room: Room, claimed: int) -> bool:
        """Whether to claim again at once: the claim took all it could, or it filled a host or
        tenant, and may have passed over due deliveries of theirs that the next claim skips
        to reach others. Otherwise it took every due delivery it was allowed."""
        after = self._slots.room(CLAIM_BATCH)
        return claimed > 0 and (
            claimed == room.total
            or after.full_hosts != room.full_hosts
            or after.full_tenants != room.full_tenants
        )

    async def _seconds_until_next_due(self, room: Room) -> float:
        async with transaction(self._engine) as conn:
            seconds = await repository.seconds_until_next_due(
                conn, self._settings.missing_event_wait_seconds, room
            )
        return MAX_SLEEP_SECONDS if seconds is None else min(max(seconds, 0.0), MAX_SLEEP_SECONDS)

    async def _claim(self, room: Room) -> int:
        """Claim what can start now and start it; how many."""
        async with transaction(self._engine) as conn:
            rows = await repository.claim_due(
                conn,
                room,
                self._settings.lease_seconds,
                self._settings.missing_event_wait_seconds,
            )
        for row in rows:
            self._slots.start(row.host, row.client_id)
            self._leases[row.id] = row.attempts
            delivery = asyncio.create_task(self._deliver(row))
            self._in_flight.add(delivery)
            delivery.add_done_callback(self._done)
        return len(rows)

    async def _renew_leases(self) -> None:
        """Every third of a lease, renew the leases of the deliveries in flight: however long
        a POST and its record take, no other notifier takes one meanwhile. (A dead notifier
        renews nothing: its deliveries are taken again one lease after its last renewal.)"""
        lease = self._settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            async with self._leases_lock:
                if not self._leases:
                    continue
                try:
                    async with transaction(self._engine) as conn:
                        await repository.extend_leases(conn, dict(self._leases), lease)
                except StorageUnavailable:
                    log.warning(
                        "webhook leases not renewed",
                        extra={"action": "lease_renewal_failed", "deliveries": len(self._leases)},
                    )

    def _done(self, delivery: asyncio.Task[None]) -> None:
        self._in_flight.discard(delivery)
        # A slot is free, and the task's next event may be deliverable now.
        self._wake.set()
        if not delivery.cancelled() and delivery.exception() is not None:
            log.error("delivery crashed", exc_info=delivery.exception(), extra={"action": "crash"})

    async def _deliver(self, row: Any) -> None:
        """One attempt of a claimed delivery: its host and tenant slots were taken by the
        claim, and are given back once its outcome is recorded."""
        try:
            started = datetime.now(UTC)
            clock = time.monotonic()
            status_code, error, retryable = await self._post(row)
            duration = time.monotonic() - clock
            duration_ms = int(duration * 1000)
            metrics.WEBHOOK_SECONDS.observe(duration)
            verdict = judge(
                self._policy,
                attempt=row.attempts,
                age_seconds=float(row.age_seconds),
                status_code=status_code,
                error=error,
                retryable_error=retryable,
            )
            metrics.WEBHOOK_DELIVERIES.labels(verdict.outcome).inc()
            async with self._leases_lock:
                # The record sets the next attempt time itself: no renewal may land after
                # it. (Two thirds of a lease at least are left: the last renewal, or the
                # claim, was at most a third of a lease ago.)
                del self._leases[row.id]
            await self._record(row, verdict, started, duration_ms, status_code)
        finally:
            self._leases.pop(row.id, None)
            self._slots.end(row.host, row.client_id)

    async def _post(self, row: Any) -> tuple[int | None, str, bool]:
        """One POST; (status code, error, whether an error is worth retrying)."""
        body = row.body.encode()
        timestamp = int(time.time())
        try:
            secrets = await self._secrets.signing(row.client_id)
        except (StorageUnavailable, SecretUnreadable) as err:
            return None, f"cannot sign: {err}", True
        headers = {
            "Content-Type": "application/json",
            "X-Callback-Event": row.event,
            "X-Callback-Event-Id": row.event_id,
            TIMESTAMP_HEADER: str(timestamp),
            **signature_headers(secrets, timestamp, body),
        }
        deadline = self._settings.connect_timeout_seconds + self._settings.read_timeout_seconds
        try:
            async with asyncio.timeout(deadline):
                async with self._client.stream(
                    "POST", row.url, content=body, headers=headers
                ) as response:
                    # Read at most max_response_bytes: receivers' answers are not kept.
                    received = 0
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
                        if received >= self._settings.max_response_bytes:
                            break
                    return response.status_code, "", False
        except AddressRefused as err:
            return None, str(err), False
        except (TimeoutError, httpx.TimeoutException):
            return None, "timed out", True
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
            return None, f"bad URL: {err}", False
        except httpx.TransportError as err:
            return None, f"connection failed: {err!r}", True

    async def _record(
        self,
        row: Any,
        verdict: Verdict,
        started: datetime,
        duration_ms: int,
        status_code: int | None,
    ) -> None:

        async def record() -> None:
            async with transaction(self._engine) as conn:
                await repository.record_attempt(
                    conn,
                    delivery_id=row.id,
                    attempt=row.attempts,
                    started_at=started,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    outcome=verdict.outcome,
                    error=verdict.reason if verdict.outcome != DELIVERED else "",
                )
                if verdict.outcome == RETRY:
                    assert verdict.retry_after is not None
                    await repository.retry_later(conn, row.id, verdict.retry_after, verdict.reason)
                else:
                    error = "" if verdict.outcome == DELIVERED else verdict.reason
                    await repository.finish(conn, row.id, verdict.outcome, error)

        try:
            await retry(
                record, on=StorageUnavailable, first=0.2, cap=5.0, give_up_after=RECORD_GIVE_UP
            )
        except StorageUnavailable:
            # The lease runs out meanwhile and the delivery is tried again: a duplicate
            # with the same event id, which receivers must tolerate anyway.
            return
        log.info(
            "webhook attempt",
            extra={
                "action": "webhook",
                "client_id": row.client_id,
                "task_id": row.task_id,
                "event": row.event,
                "event_id": row.event_id,
                "attempt": row.attempts,
                "outcome": verdict.outcome,
                "reason": verdict.reason,
            },
        )
