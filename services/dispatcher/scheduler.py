"""The dispatch loop: claim due work, resolve lost attempts, sleep until the next due time."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common import metrics
from services.common.calling_windows import CallingWindow
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.retry import Backoff
from services.common.tenancy import TenantDefaults
from services.dispatcher import fairness, repository, transitions, windows
from services.dispatcher.lifecycle import start_event
from services.dispatcher.messages import dial_requests, has_webhook, webhook_events
from services.dispatcher.results import write_plan
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.wakeups import Wakeups

log = logging.getLogger(__name__)

# Leases (an hour long) are checked when the first one runs out, and at least this often.
# Not on every pass: while calls end, every batch of results wakes every dispatcher, and a
# check on each wake-up was most of the lease checks of a burst (README, Benchmarks).
LEASE_CHECK_SECONDS = 1.0
# Until the next look, when the only due work is in queues another dispatcher is claiming
# (sooner if a notification comes). Below the claim lookahead (0.25 s), so no task is late
# for it.
CONTENDED_PAUSE_SECONDS = 0.05


def claim_share(settings: DispatcherSettings, due_queues: int) -> int:
    """Tasks each queue with due work may get in one pass: an equal share of the pass, at
    least claim_batch. One queue is claimed by one dispatcher at a time, and under load a
    claim transaction takes tens of ms: small claims made a burst on one queue a slow chain
    of them (README, Benchmarks: bigger claims for a lone busy queue)."""
    return max(settings.claim_batch, settings.claim_pass_size // max(due_queues, 1))


def _calls_at_once(task: Any) -> int:
    """The calls a claimed task starts at once, as the calls-per-second quota counts them:
    a_number and every extended A number ring together (B rings later, once A answered).
    A claim may take the bucket below zero this way; the debt delays the tenant's next."""
    return 1 + len(task.extended_a_numbers or ())


def _dialed(call: Any) -> bool:
    """Whether a call row was dialed. A row without a deadline was written by a dialer of a
    version before migration 0012, which recorded calls as it dialed them."""
    return call.dialed_at is not None or call.dial_by is None


def _recorded(call: Any | None) -> transitions.RecordedCall | None:
    """The call row of an attempt as the planner reads it."""
    if call is None:
        return None
    return transitions.RecordedCall(
        call.call_uuid, call.result, call.comment, call.connected_at is not None, _dialed(call)
    )


class _Pass(NamedTuple):
    claimed: int
    contended: bool  # a queue or tenant with due work was held by another dispatcher
    # When no queue had due work: when there is work next (read in the same transaction).
    next_wake: repository.NextWake | None
    # Tenants with due work that a quota held back, and the seconds until the first of
    # them held by its calls-per-second quota has a call to start again (None: none was).
    held_clients: tuple[str, ...] = ()
    retry_in: float | None = None


class _TenantClaim(NamedTuple):
    claimed: Sequence[Any] | None  # None: the tenant was held by another dispatcher
    # A queue of the tenant was locked by someone else (a bulk add, a change): look again
    # shortly rather than ask for the next due time, which would say "now".
    contended: bool = False
    # What held the tenant back, if anything stopped it short of its allotment:
    # "in_progress", "calls_per_second" (with the seconds until its next call) or "".
    held_by: str = ""
    retry_in: float | None = None


class Scheduler:
    """Starts attempts when they are due, within each queue's concurrent_task_limit, each
    tenant's quotas and a fair share of the dialers."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: DispatcherSettings,
        wakeups: Wakeups,
        outbox_ready: asyncio.Event,
        tenant_defaults: TenantDefaults | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._wakeups = wakeups
        self._outbox_ready = outbox_ready
        self._defaults = tenant_defaults or TenantDefaults()
        self._stopping = False
        self._next_lease_check = 0.0  # time.monotonic()

    def stop(self) -> None:
        """Finish the current transaction, then claim nothing more."""
        self._stopping = True
        self._wakeups.look_now()

    async def run(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while not self._stopping:
            self._wakeups.clear()
            try:
                work = await self._claim_pass()
                busy, next_wake = work.claimed, work.next_wake
                if time.monotonic() >= self._next_lease_check:
                    expired = await self._expire_leases()
                    # A full batch may leave more: look again on the next pass.
                    pause = 0.0 if expired else LEASE_CHECK_SECONDS
                    self._next_lease_check = time.monotonic() + pause
                    busy += expired
                if busy:
                    self._outbox_ready.set()
                    continue  # there may be more: claim until a pass finds nothing
                if work.contended:
                    # The queues with due work are being claimed by another dispatcher,
                    # which goes on until they are done. Asking for the next due time now
                    # would say "now" and make this one spin (four transactions a round).
                    delay = CONTENDED_PAUSE_SECONDS
                else:
                    if next_wake is None:
                        async with transaction(self._engine) as conn:
                            next_wake = await self._next_wake(conn, work.held_clients)
                    delay = self._sleep_until(next_wake)
                    if work.retry_in is not None:
                        delay = min(delay, work.retry_in)
                backoff.reset()
            except StorageUnavailable:
                log.warning("database unavailable", extra={"action": "claim_retry"})
                delay = backoff.next_delay()
            await self._wakeups.sleep(delay)

    async def _next_wake(
        self, conn: AsyncConnection, held_clients: Sequence[str] = ()
    ) -> repository.NextWake:
        return await repository.next_wake(
            conn,
            self._settings.attempt_lease_seconds,
            self._settings.lookahead_seconds,
            held_clients,
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
        """One round over the tenants with due work: each claims up to its allotment (a
        fair share of the pass and of the dialers' free slots), shared by its queues."""
        capacity = self._settings.dialer_capacity
        async with transaction(self._engine) as conn:
            due = await repository.tenants_with_due_work(conn, self._settings.lookahead_seconds)
            if not due:  # idle: one transaction per wake-up, not two
                return _Pass(0, False, await self._next_wake(conn))
            in_progress = await repository.in_progress_by_tenant(conn) if capacity else {}
        # Replicas walk the tenants and queues in different orders, so they rarely meet on
        # a lock (and ties in the fair share go to a different tenant each time).
        tenants = list(due)
        random.shuffle(tenants)
        share = fairness.tenant_share(
            self._settings.claim_pass_size, self._settings.claim_batch, len(tenants)
        )
        free = max(capacity - sum(in_progress.values()), 0) if capacity else None
        kept = fairness.reserve(capacity, self._settings.dialer_reserve_fraction)
        allotted = fairness.allotments(tenants, in_progress, free, share, capacity - kept)
        if free == 0:
            metrics.CLAIMS_HELD.labels("dialer_capacity").inc()
            # Every tenant waits for a callback to end (which notifies), not for a due time.
            return _Pass(0, False, None, tuple(tenants))
        claimed, contended = 0, False
        held: list[str] = []
        retry_in: float | None = None
        for client_id in tenants:
            if self._stopping:
                break
            if not allotted[client_id]:
                held.append(client_id)  # the dialers' free slots went to other tenants
                continue
            result = await self._claim_for_tenant(client_id, due[client_id], allotted[client_id])
            contended = contended or result.contended
            if result.claimed is None:
                contended = True
                continue
            claimed += len(result.claimed)
            if result.held_by:
                metrics.CLAIMS_HELD.labels(result.held_by).inc()
                if not result.claimed:
                    held.append(client_id)
            if result.retry_in is not None:
                retry_in = result.retry_in if retry_in is None else min(retry_in, result.retry_in)
        return _Pass(claimed, contended, None, tuple(held), retry_in)

    async def _claim_for_tenant(
        self, client_id: str, queue_ids: list[int], allotment: int
    ) -> _TenantClaim:
        """Claim for one tenant's queues, up to its allotment and quotas."""
        with metrics.CLAIM_SECONDS.time():
            result = await self._claim_in_transaction(client_id, queue_ids, allotment)
        if result.claimed:
            # Committed: its dial requests go out now, not after the rest of the pass (other
            # tenants' claims) and the lease check that may follow it. With the lookahead,
            # the dialer needs them before the due time; without, the phone waits for them.
            self._outbox_ready.set()
        for task in result.claimed or ():
            log.info(
                "attempt started",
                extra={
                    "action": "claim",
                    "client_id": client_id,
                    "queue_id": task.queue_id,
                    "task_id": task.id,
                    "attempt": task.attempts,
                    "call_uuid": task.cdr,
                },
            )
        if result.claimed:
            metrics.TASKS_CLAIMED.inc(len(result.claimed))
        return result

    async def _claim_in_transaction(
        self, client_id: str, queue_ids: list[int], allotment: int
    ) -> _TenantClaim:
        """Lock the tenant, count its callbacks in progress and refill its token bucket,
        then claim from its queues (each locked in turn) within all of it."""
        lease = self._settings.attempt_lease_seconds
        started: list[Any] = []
        window_closings: dict[int, datetime] = {}  # by task id, for their dial requests
        contended = False
        async with transaction(self._engine) as conn:
            tenant = await repository.lock_tenant(conn, client_id, self._defaults)
            if tenant is None:
                return _TenantClaim(None)  # another dispatcher is claiming for it
            in_flight = await repository.count_tenant_in_flight(conn, client_id, lease)
            by_quota = tenant.max_in_progress - in_flight
            by_rate = math.floor(tenant.tokens)
            room = min(allotment, by_quota, by_rate)
            random.shuffle(queue_ids)
            share = claim_share(self._settings, len(queue_ids))
            for queue_id in queue_ids:
                if room - len(started) <= 0 or self._stopping:
                    break
                claimed = await self._claim_queue(
                    conn, queue_id, min(share, room - len(started)), window_closings
                )
                if claimed is None:
                    contended = True
                else:
                    started.extend(claimed)
            if started:
                in_order = sorted(started, key=lambda row: row.id)
                messages = await self._start_webhooks(conn, in_order)
                messages.append(dial_requests(in_order, window_closings))
                await repository.add_to_outbox(conn, messages)
                tokens_left = tenant.tokens - sum(map(_calls_at_once, started))
                await repository.spend_tokens(conn, client_id, tokens_left)
        if len(started) >= room and room < allotment:
            if by_quota <= by_rate:
                return _TenantClaim(started, contended, "in_progress")
            # The bucket has less than one call left (or is in debt: a callback rings all
            # its A numbers at once): when it has one again.
            tokens_left = tenant.tokens - sum(map(_calls_at_once, started))
            wait = max(1.0 - tokens_left, 0.0) / tenant.calls_per_second
            return _TenantClaim(started, contended, "calls_per_second", wait)
        return _TenantClaim(started, contended)

    async def _claim_queue(
        self,
        conn: AsyncConnection,
        queue_id: int,
        how_many: int,
        window_closings: dict[int, datetime],
    ) -> list[Any] | None:
        """Claim up to `how_many` of a queue's due tasks within its limit; None if the
        queue is locked (a bulk add or a change of it is being written). The moments the
        claimed tasks' calling windows close go into `window_closings`."""
        queue = await repository.lock_queue(conn, queue_id)
        if queue is None:
            return None  # locked, or just switched off or deleted
        limit = queue.limit
        now: datetime | None = None
        if queue.window is not None:
            # Even at its limit: a due task outside its window shows `delayed_interval`.
            now = await self._hold_outside_window(conn, queue_id, queue.window)
        in_flight = await repository.count_in_flight(
            conn, queue_id, self._settings.attempt_lease_seconds
        )
        free = limit - in_flight
        metrics.QUEUE_LIMIT.labels(str(queue_id)).set(limit)
        started: list[Any] = []
        if free > 0:
            started = list(
                await repository.claim_due_tasks(
                    conn,
                    queue_id,
                    min(free, how_many),
                    self._settings.attempt_lease_seconds,
                    self._settings.lookahead_seconds,
                )
            )
        metrics.QUEUE_IN_FLIGHT.labels(str(queue_id)).set(in_flight + len(started))
        if queue.window is not None and now is not None and started:
            # By the same now() as the hold: a claimed task is in its window when dialed
            # at its due time, and its dial request says until when (the dialer checks).
            claimed = (windows.Claimed(t.id, t.timezone, t.next_run_at) for t in started)
            window_closings.update(windows.closings(queue.window, now, claimed))
        return started

    async def _hold_outside_window(
        self, conn: AsyncConnection, queue_id: int, window: CallingWindow
    ) -> datetime:
        """Hold the queue's due tasks whose calling window is closed when they would be
        dialed, zone by zone, before the claim (same transaction, same now()); returns
        that now()."""
        lookahead = self._settings.lookahead_seconds
        now, zones = await repository.due_zones(conn, queue_id, lookahead)
        for timezone in zones:
            try:
                hold = windows.hold_for_zone(window, timezone, now, timedelta(seconds=lookahead))
            except (ValueError, KeyError) as error:  # a zone the tz database no longer has
                log.warning(
                    "calling window not evaluated",
                    extra={"queue_id": queue_id, "timezone": timezone, "error": str(error)},
                )
                continue
            if hold is not None:
                held = await repository.hold_outside_window(conn, queue_id, hold, lookahead)
                if held:
                    metrics.TASKS_HELD_BY_WINDOW.inc(held)
        return now

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
        """Resolve attempts whose lease ran out (see transitions.LeaseExpired): the task's
        attempt number moves on, or its call_uuid does, so a late dial is refused."""
        async with transaction(self._engine) as conn:
            expired = await repository.lock_expired_leases(conn, self._settings.claim_batch)
            events = [
                transitions.LeaseExpired(
                    task.id,
                    task.attempts,
                    task.redials,
                    _recorded(await repository.call_of_attempt(conn, task.id, task.attempts)),
                )
                for task in expired
            ]
            tasks = {task.id: task for task in expired}
            plan = transitions.plan(tasks, events, max_redials=self._settings.max_redials)
            written = await write_plan(
                conn,
                plan,
                tasks,
                whole_rows=True,
                lease_seconds=self._settings.attempt_lease_seconds,
            )
        if written.redialed:
            metrics.ATTEMPTS_REDIALED.inc(written.redialed)
        for decision in plan.decisions:
            self._log_expiry(tasks[decision.event.task_id], decision.outcome)
        return len(expired)

    @staticmethod
    def _log_expiry(task: Any, outcome: str) -> None:
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
