"""The dispatch loop: claim due work, resolve lost attempts, sleep until the next due time."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import metrics
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.dispatcher import repository
from services.dispatcher.lifecycle import (
    CONNECTED,
    LOST_AFTER_CONNECTED,
    resolve_attempt,
    start_event,
)
from services.dispatcher.messages import dial_requests, has_webhook, webhook_events
from services.dispatcher.results import apply_resolution
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.wakeups import Wakeups

log = logging.getLogger(__name__)

# Leases (an hour long) are checked when the first one runs out, and at least this often.
# Not on every pass: while calls end, every batch of results wakes every dispatcher; over a
# 10,000-task burst (pg_stat_statements) lease checks went from 38 to 10, and all the
# dispatchers' transactions from 520 to 470.
LEASE_CHECK_SECONDS = 1.0
# Until the next look, when the only due work is in queues another dispatcher is claiming
# (sooner if a notification comes). Below the claim lookahead (0.25 s), so no task is late
# for it.
CONTENDED_PAUSE_SECONDS = 0.05


def claim_share(settings: DispatcherSettings, due_queues: int) -> int:
    """Tasks each queue with due work may get in one pass: an equal share of the pass, at
    least claim_batch. A 10,000-task burst on one queue went from 3,462-3,812 to
    4,509-5,015 tasks/s dialed with batches of 1,000 instead of 200: one queue is claimed
    by one dispatcher at a time, and under load a claim transaction takes tens of ms."""
    return max(settings.claim_batch, settings.claim_pass_size // max(due_queues, 1))


class _Pass(NamedTuple):
    claimed: int
    contended: bool  # a queue with due work was held by another dispatcher
    # When no queue had due work: when there is work next (read in the same transaction).
    next_wake: repository.NextWake | None


class Scheduler:
    """Starts attempts when they are due, within each queue's concurrent_task_limit."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: DispatcherSettings,
        wakeups: Wakeups,
        outbox_ready: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._wakeups = wakeups
        self._outbox_ready = outbox_ready
        self._stopping = False
        self._next_lease_check = 0.0  # time.monotonic()

    def stop(self) -> None:
        """Finish the current transaction, then claim nothing more."""
        self._stopping = True
        self._wakeups.look_now()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            self._wakeups.clear()
            try:
                busy, contended, next_wake = await self._claim_pass()
                if time.monotonic() >= self._next_lease_check:
                    expired = await self._expire_leases()
                    # A full batch may leave more: look again on the next pass.
                    pause = 0.0 if expired else LEASE_CHECK_SECONDS
                    self._next_lease_check = time.monotonic() + pause
                    busy += expired
                if busy:
                    self._outbox_ready.set()
                    continue  # there may be more: claim until a pass finds nothing
                if contended:
                    # The queues with due work are being claimed by another dispatcher,
                    # which goes on until they are done. Asking for the next due time now
                    # would say "now" and make this one spin (four transactions a round,
                    # about 70 rounds during a 10,000-task burst).
                    delay = CONTENDED_PAUSE_SECONDS
                else:
                    if next_wake is None:
                        async with transaction(self._engine) as conn:
                            next_wake = await self._next_wake(conn)
                    delay = self._sleep_until(next_wake)
                backoff = 0.1
            except StorageUnavailable:
                log.warning("database unavailable", extra={"action": "claim_retry"})
                delay, backoff = backoff, min(backoff * 2, 5.0)
            await self._wakeups.sleep(delay)

    async def _next_wake(self, conn: AsyncConnection) -> repository.NextWake:
        return await repository.next_wake(
            conn, self._settings.attempt_lease_seconds, self._settings.lookahead_seconds
        )

    def _sleep_until(self, wake: repository.NextWake) -> float:
        """Seconds to sleep (unless notified) until the next work; a lease running out
        brings its check forward."""
        if wake.lease_in is not None:
            self._next_lease_check = min(
                self._next_lease_check, time.monotonic() + max(wake.lease_in, 0.0)
            )
        times = [t for t in wake if t is not None]
        if not times:
            return self._settings.max_idle_seconds
        return min(max(min(times), 0.0), self._settings.max_idle_seconds)

    async def _claim_pass(self) -> _Pass:
        """One round over the queues with due work, each claimed up to its share (fairness).
        Says how many were claimed, and whether a queue was skipped because another
        dispatcher held it."""
        async with transaction(self._engine) as conn:
            queue_ids = await repository.queues_with_due_work(
                conn, self._settings.lookahead_seconds
            )
            if not queue_ids:  # idle: one transaction per wake-up, not two
                return _Pass(0, False, await self._next_wake(conn))
        # Replicas walk the queues in different orders, so they rarely meet on a lock.
        random.shuffle(queue_ids)
        share = claim_share(self._settings, len(queue_ids))
        claimed, contended = 0, False
        for queue_id in queue_ids:
            if self._stopping:
                break
            started = await self._claim_for_queue(queue_id, share)
            if started is None:
                contended = True
            else:
                claimed += started
        return _Pass(claimed, contended, None)

    async def _claim_for_queue(self, queue_id: int, share: int) -> int | None:
        """Tasks claimed from the queue (at most `share`); None if another dispatcher holds
        it."""
        with metrics.CLAIM_SECONDS.time():
            started = await self._claim_in_transaction(queue_id, share)
        if started is None:
            return None
        metrics.TASKS_CLAIMED.inc(len(started))
        for task in started:
            log.info(
                "attempt started",
                extra={
                    "action": "claim",
                    "client_id": task.client_id,
                    "queue_id": queue_id,
                    "task_id": task.id,
                    "attempt": task.attempts,
                    "call_uuid": task.cdr,
                },
            )
        return len(started)

    async def _claim_in_transaction(self, queue_id: int, share: int) -> Sequence[Any] | None:
        async with transaction(self._engine) as conn:
            limit = await repository.lock_queue(conn, queue_id)
            if limit is None:
                return None  # another dispatcher holds it, or it was just switched off
            in_flight = await repository.count_in_flight(
                conn, queue_id, self._settings.attempt_lease_seconds
            )
            free = limit - in_flight
            metrics.QUEUE_LIMIT.labels(str(queue_id)).set(limit)
            if free <= 0:
                metrics.QUEUE_IN_FLIGHT.labels(str(queue_id)).set(in_flight)
                return []
            how_many = min(free, share)
            started = await repository.claim_due_tasks(
                conn,
                queue_id,
                how_many,
                self._settings.attempt_lease_seconds,
                self._settings.lookahead_seconds,
            )
            if started:
                in_order = sorted(started, key=lambda row: row.id)
                messages = await self._start_webhooks(conn, in_order)
                messages.append(dial_requests(in_order))
                await repository.add_to_outbox(conn, messages)
        metrics.QUEUE_IN_FLIGHT.labels(str(queue_id)).set(in_flight + len(started))
        return started

    @staticmethod
    async def _start_webhooks(
        conn: AsyncConnection, claimed: Sequence[Any]
    ) -> list[repository.Message]:
        """The `before`/`before_again` events of the claimed tasks that have a URL for
        theirs, with the whole task (read only for those)."""
        wanted = {task.id for task in claimed if has_webhook(task, [start_event(task.attempts)])}
        if not wanted:
            return []
        whole = {row.id: row for row in await repository.tasks_by_id(conn, list(wanted))}
        return [
            event
            for task in claimed
            if task.id in wanted
            for event in webhook_events(whole[task.id], [start_event(task.attempts)])
        ]

    async def _expire_leases(self) -> int:
        """Resolve attempts whose lease ran out: with the call's result if the dialer saved
        one, as connected if A and B were known to be connected, else as lost. The task's
        attempt number moves on, so a late dial is refused."""
        async with transaction(self._engine) as conn:
            expired = await repository.lock_expired_leases(conn, self._settings.claim_batch)
            for task in expired:
                call = await repository.call_of_attempt(conn, task.id, task.attempts)
                if call is not None and call.result != "in_progress":
                    outcome, comment = call.result, call.comment
                elif call is not None and call.connected_at is not None:
                    # A and B talked (and `success` went out, if the task has its URL),
                    # however the call ended.
                    outcome, comment = CONNECTED, LOST_AFTER_CONNECTED
                    await repository.mark_call_lost(conn, call.call_uuid)
                else:
                    outcome, comment = "lost", ""
                    if call is not None:
                        await repository.mark_call_lost(conn, call.call_uuid)
                resolution = resolve_attempt(
                    outcome=outcome,
                    comment=comment,
                    attempt=task.attempts,
                    try_count=task.try_count,
                    try_again_pause=task.try_again_pause,
                )
                await apply_resolution(conn, task, resolution)
                log.warning(
                    "attempt lease expired",
                    extra={
                        "action": "lease_expired",
                        "client_id": task.client_id,
                        "queue_id": task.queue_id,
                        "task_id": task.id,
                        "attempt": task.attempts,
                        "outcome": outcome,
                    },
                )
            if expired:
                await repository.notify_wake(conn)
        return len(expired)
