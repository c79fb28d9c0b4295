"""Delivers queued webhooks: signed POSTs, bounded per host, retried by the policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.notifier import repository
from services.notifier.keyring import SecretUnreadable
from services.notifier.policy import DELIVERED, RETRY, RetryPolicy, Verdict, judge
from services.notifier.settings import NotifierSettings
from services.notifier.signing import TIMESTAMP_HEADER, signature_headers
from services.notifier.tenant_secrets import TenantSecrets
from services.notifier.transport import AddressRefused

log = logging.getLogger(__name__)


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
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def finished(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._settings.max_in_flight - len(self._in_flight)
            try:
                claimed = await self._claim(min(free, 100)) if free > 0 else 0
                if claimed and claimed == min(free, 100):
                    continue
                delay = await self._seconds_until_next_due()
            except StorageUnavailable:
                delay = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _seconds_until_next_due(self) -> float:
        async with transaction(self._engine) as conn:
            seconds = await repository.seconds_until_next_due(
                conn, self._settings.missing_event_wait_seconds
            )
        return 30.0 if seconds is None else min(max(seconds, 0.0), 30.0)

    async def _claim(self, how_many: int) -> int:
        async with transaction(self._engine) as conn:
            rows = await repository.claim_due(
                conn,
                how_many,
                self._settings.lease_seconds,
                self._settings.missing_event_wait_seconds,
            )
        for row in rows:
            delivery = asyncio.create_task(self._deliver(row))
            self._in_flight.add(delivery)
            delivery.add_done_callback(self._done)
        return len(rows)

    def _done(self, delivery: asyncio.Task[None]) -> None:
        self._in_flight.discard(delivery)
        # A slot is free, and the task's next event may be deliverable now.
        self._wake.set()
        if not delivery.cancelled() and delivery.exception() is not None:
            log.error("delivery crashed", exc_info=delivery.exception(), extra={"action": "crash"})

    def _host_slot(self, url: str) -> asyncio.Semaphore:
        host = (urlsplit(url).hostname or "").lower()
        if host not in self._hosts:
            self._hosts[host] = asyncio.Semaphore(self._settings.max_in_flight_per_host)
        return self._hosts[host]

    async def _deliver(self, row: Any) -> None:
        async with self._host_slot(row.url):
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
        await self._record(row, verdict, started, duration_ms, status_code)

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
        delay = 0.2
        while True:
            try:
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
                        await repository.retry_later(
                            conn, row.id, verdict.retry_after, verdict.reason
                        )
                    else:
                        error = "" if verdict.outcome == DELIVERED else verdict.reason
                        await repository.finish(conn, row.id, verdict.outcome, error)
                break
            except StorageUnavailable:
                # The lease runs out meanwhile and the delivery is tried again: a duplicate
                # with the same event id, which receivers must tolerate anyway.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if delay >= 5.0:
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
