"""Dial requests (NATS) -> calls through the telephony backend -> call events (NATS).

Requests come in batches (DialRequests: the tasks one claim started), up to the
dispatcher's lookahead before they are due. Their calls are recorded in PostgreSQL at once,
before they are due, and dialed at their time; the message is acknowledged once all are
dialed (a dialer that dies meanwhile loses nothing: the redelivered request takes over a
record its dialer did not dial by its deadline).

Delivery, per message: recorded -> dialed at the due time -> ack; attempt no longer current
or already dialed, or too little of its lease left for the longest call -> not dialed (the
dispatcher dials an attempt that placed no call again, without spending a try); its calling
window closed by the moment the call would start (after any calls-per-second wait) -> not
dialed, reported as `outside_window` (see windows.py); database
down -> nak with a delay; unreadable -> term. A batch bigger than the room left for calls:
the first ones are taken and the rest re-published for any dialer, before the ack, so that
nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus, metrics
from services.common.batch_messages import read_batch, read_or_term
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.supervision import exit_when_failed
from services.common.vocabulary import OUTCOME_TO_PROTO, CallOutcome
from services.dialer import repository
from services.dialer.backend import CallPlan, CallReport, TelephonyBackend, limit
from services.dialer.events import CallEventPublisher
from services.dialer.records import RecordWriter
from services.dialer.settings import DialerSettings
from services.dialer.windows import outside_window_event, window_closed

log = logging.getLogger(__name__)

# The operator's default account: every tenant may call on it (DIALER_SIP_ACCOUNTS "0").
DEFAULT_EXTENSION = 0
# A request is never held longer than this, whatever its due time says: the dispatcher
# claims at most 5 s ahead, and a dialer whose clock runs behind must not sit on requests.
MAX_HOLD_SECONDS = 5.0
# The mark before a dial is an UPDATE, held open until the due time, then a COMMIT. Each
# starts early by its recent duration (a moving average with this weight for the latest), at
# most this much. Only the commit's round trip and the hand-over to the backend lie between
# a committed mark and the dial: a dialer killed there leaves a try spent without a call.
MARK_LEAD_WEIGHT = 0.2
MAX_MARK_LEAD_SECONDS = 0.05
# Wakes remembered for the sleeps' own lead (see Dialer._wakes).
WAKES_KEPT = 10
# Calls built between two turns of the event loop while their records are written: the
# record's statements (and every call in progress) go on between these slices.
PREPARE_BETWEEN_TURNS = 20
# A recorded call is dialed within its hold plus this, or never by this dialer: after that a
# redelivery of its request (its dialer died meanwhile) may take the record over. Covers a
# loop held up by a burst of work, not a paused process.
DIAL_GRACE_SECONDS = 2.0
# A call the calls-per-second cap starts less than this before its record's deadline (or
# after it) gets a later deadline first: its mark must begin, and may be retried, in time.
DEADLINE_MARGIN_SECONDS = 1.0


class _ToDial(NamedTuple):
    """A call this dialer recorded: the tenant's account for it (None: the operator's
    default), and its record's deadline."""

    account: tuple[str, str] | None
    record: repository.Recorded


@dataclass
class _DialNow:
    """Calls due already when their request came: marked dialed as they are recorded."""

    calls: set[str]  # built on the operator's default account, their start reserved
    at: float  # their start (time.time())
    built: asyncio.Event  # set once every call of the message is built
    started: set[str] = field(default_factory=set)  # marked and sent


def _ids(request: events_pb2.DialRequest) -> dict[str, object]:
    return {
        "client_id": request.client_id,
        "queue_id": request.queue_id,
        "task_id": request.task_id,
        "attempt": request.attempt,
        "call_uuid": request.call_uuid,
    }


def _complete(request: events_pb2.DialRequest) -> bool:
    return bool(request.task_id and request.attempt and request.call_uuid and request.a_number)


def parse(data: bytes) -> tuple[list[events_pb2.DialRequest], int]:
    """The requests of a message that can be dialed, and how many could not (incomplete)."""
    return read_batch(data, events_pb2.DialRequests, "requests", events_pb2.DialRequest, _complete)


def _past_deadline(
    starts: Sequence[tuple[float, dict[str, _ToDial]]], recorded_at: float
) -> dict[str, tuple[repository.Recorded, float]]:
    """The calls paced (by start: Dialer._paced) that start too close to their record's
    deadline, or after it, to be marked in time: each with the seconds from now it needs
    (its start and the grace again)."""
    wall, monotonic = time.time(), time.monotonic()
    late: dict[str, tuple[repository.Recorded, float]] = {}
    for start, calls in starts:
        for call_uuid, call in calls.items():
            deadline = wall + recorded_at + call.record.within - monotonic
            if start + DEADLINE_MARGIN_SECONDS > deadline:
                late[call_uuid] = (call.record, start - wall + DIAL_GRACE_SECONDS)
    return late


def _by_due_time(
    requests: Sequence[events_pb2.DialRequest], now_ms: float
) -> list[tuple[float, list[events_pb2.DialRequest]]]:
    """Requests grouped by when to dial them, earliest first: due ones under now_ms, the
    others under their due time."""
    groups: dict[float, list[events_pb2.DialRequest]] = {}
    for request in requests:
        due_ms = float(request.due_at_unix_ms)
        groups.setdefault(due_ms if due_ms > now_ms else now_ms, []).append(request)
    return sorted(groups.items())


class Dialer:
    def __init__(
        self,
        engine: AsyncEngine,
        jetstream: JetStreamContext,
        backend: TelephonyBackend,
        settings: DialerSettings,
    ) -> None:
        self._engine = engine
        self._jetstream = jetstream
        self._backend = backend
        self._settings = settings
        self._calls: set[asyncio.Task[None]] = set()
        # Read when scraped: an inc() and a dec() per call took a lock each.
        metrics.CALLS_IN_PROGRESS.set_function(lambda: len(self._calls))
        # Messages whose requests wait for their due time or their record.
        self._held: set[asyncio.Task[None]] = set()
        self._held_count = 0  # requests in them
        self._slot_free = asyncio.Event()
        self._events = CallEventPublisher(jetstream, settings.report_retry_seconds)
        self._records = RecordWriter(engine, self._events, settings.report_retry_seconds)
        self._writers: list[asyncio.Task[None]] = []
        self._stopping = False
        # How long the mark's UPDATE and its COMMIT usually take (moving averages): each is
        # started that much before the calls' due time.
        self._update_lead = 0.0
        self._commit_lead = 0.0
        # How late the last sleeps woke (the loop busy with other calls' messages, the
        # process waiting for a core): both waits before a mark start the least of these
        # earlier. The least, not an average: one wake held up by a burst would otherwise
        # send the next seconds' calls early.
        self._wakes: deque[float] = deque([0.0], maxlen=WAKES_KEPT)

    def stop(self) -> None:
        """Take no new calls; the ones in progress go on until they end."""
        self._stopping = True
        self._slot_free.set()

    async def calls_finished(self) -> None:
        if self._held:
            await asyncio.wait(set(self._held))
        if self._calls:
            await asyncio.wait(set(self._calls))
        await self._records.drain()  # then their end events are queued
        await self._events.drain()
        for writer in self._writers:
            writer.cancel()

    async def run(self) -> None:
        self._writers = [
            asyncio.create_task(self._records.run()),
            asyncio.create_task(self._events.run()),
        ]
        for writer in self._writers:
            writer.add_done_callback(exit_when_failed)
        subscription = await bus.pull_consumer_when_ready(
            self._jetstream, bus.CONSUMER_DIALER, ack_wait_seconds=30
        )
        while not self._stopping:
            room = self._settings.max_concurrent_calls - len(self._calls) - self._held_count
            if room <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            # One message at a time: how many calls a batch holds is known once it is read.
            for msg in await bus.fetch(subscription, 1):
                await self._take(msg, room)

    async def _take(self, msg: Msg, room: int) -> None:
        """Hold the message's requests (up to `room`) until they are due; pass the rest on."""
        requests = await read_or_term(msg, parse, "dial requests")
        if requests is None:
            return
        if len(requests) > room:
            requests, rest = requests[:room], requests[room:]
            if not await self._pass_on(rest):
                await bus.settle(msg, bus.Verdict.NAK, delay=1.0)
                return
        self._held_count += len(requests)
        held = asyncio.create_task(self._dial_when_due(msg, requests))
        self._held.add(held)
        held.add_done_callback(self._held.discard)
        held.add_done_callback(exit_when_failed)  # as if the fetch loop itself had failed

    async def _pass_on(self, rest: Sequence[events_pb2.DialRequest]) -> bool:
        """Re-publish requests this dialer has no room for (stored before the original is
        acknowledged). Its id names the first of them: a redelivery of the original, split
        at the same place, is dropped as a duplicate; split elsewhere, its calls rows keep
        any attempt from being dialed twice."""
        first = rest[0]
        payload = events_pb2.DialRequests(requests=rest).SerializeToString()
        try:
            await bus.publish(
                self._jetstream,
                bus.SUBJECT_DIAL,
                payload,
                f"dial-rest:{first.call_uuid}",
            )
        except Exception as err:
            log.warning("could not pass on", extra={"action": "pass_on", "error": repr(err)})
            return False
        log.info("passed on", extra={"action": "pass_on", "count": len(rest)})
        return True

    async def _dial_when_due(self, msg: Msg, requests: Sequence[events_pb2.DialRequest]) -> None:
        """Record the calls at once and have the backend build them, start each group of
        them at its due time (held at most MAX_HOLD_SECONDS), then acknowledge the message.
        Recording and building are the work a phone would otherwise wait for: done here,
        they are done before the due time (the dispatcher's lookahead)."""
        received = time.time()
        groups = _by_due_time(requests, received * 1000)
        hold = min(max(groups[-1][0] / 1000 - received, 0.0), MAX_HOLD_SECONDS)
        waiting = len(requests)
        prepared: set[str] = set()  # built by the backend, not started yet
        # Requests already due as they arrive (no lookahead, or late): their calls are
        # marked dialed in the record's own transaction, one round trip fewer, if the cap
        # lets them start now. Every start is reserved here, before any mark.
        overdue = groups[0][1] if groups[0][0] <= received * 1000 else []
        slots = {r.call_uuid: self._backend.reserve_start(received) for r in overdue}
        now = _DialNow(
            {uuid for uuid, slot in slots.items() if slot <= received}, received, asyncio.Event()
        )
        recorded_at = time.monotonic()
        recording = asyncio.ensure_future(self._record_calls(requests, hold, now))
        extending: asyncio.Future[dict[str, repository.Recorded]] | None = None
        try:
            # The calls are built while the database records them (the loop is turned every
            # few calls, so that the record's statements go on meanwhile): with the account
            # guessed as the operator's default, and built again below for a tenant's own.
            guessed: dict[str, CallPlan] = {}
            for index, request in enumerate(requests):
                if index % PREPARE_BETWEEN_TURNS == 0:
                    await asyncio.sleep(0)
                if _may_use_account(request, None):
                    guessed[request.call_uuid] = plan = _plan(request, None)
                    self._backend.prepare_call(plan)
                    prepared.add(request.call_uuid)
            now.calls &= prepared  # only calls built as they will be sent
            now.built.set()
            recorded = await recording
            if recorded is None:
                await bus.settle(msg, bus.Verdict.NAK, delay=1.0)
                return
            prepared -= now.started  # sent as the record was committed
            plans: dict[str, CallPlan] = {}
            for request in requests:
                call_uuid = request.call_uuid
                if call_uuid in now.started:
                    self._dial(request, guessed[call_uuid])
                    continue
                if call_uuid not in recorded:
                    if call_uuid in prepared:
                        self._backend.forget_call(call_uuid)
                        prepared.discard(call_uuid)
                    continue
                account = recorded[call_uuid].account
                plan = plans[call_uuid] = guessed.get(call_uuid) or _plan(request, account)
                if plan.account != account:  # the tenant's own account: built again
                    self._backend.forget_call(call_uuid)
                    prepared.discard(call_uuid)
                    plan = plans[call_uuid] = _plan(request, account)
                if call_uuid not in prepared and _may_use_account(request, account):
                    self._backend.prepare_call(plan)
                    prepared.add(call_uuid)
            for index, (due_ms, group) in enumerate(groups):
                due = min(due_ms / 1000, received + MAX_HOLD_SECONDS)
                await self._until_mark(due)
                if self._stopping:  # another dialer takes them now, not after the ack wait
                    later = [r.call_uuid for _, rest in groups[index:] for r in rest]
                    await self._release(later)
                    await bus.settle(msg, bus.Verdict.NAK)
                    return
                mine = {
                    r.call_uuid: recorded[r.call_uuid]
                    for r in group
                    if r.call_uuid in recorded and r.call_uuid not in now.started
                }
                # The group's requests with a calling window (most have none).
                windowed = {r.call_uuid: r for r in group if r.window_closes_at_unix_ms}
                starts = self._paced(mine, due, slots)
                # Calls the cap starts after their record's deadline get a later one,
                # meanwhile (the first start's mark goes on at once).
                late = _past_deadline(starts, recorded_at)
                extending = (
                    asyncio.ensure_future(self._extend_deadlines(late, recorded_at))
                    if late
                    else None
                )
                for start, paced in starts:
                    if start > due:  # over the calls-per-second cap: a later start
                        await self._until_mark(start)
                    if extending is not None and not late.keys().isdisjoint(paced):
                        extended = await extending
                        paced = {
                            uuid: call._replace(record=extended.get(uuid, call.record))
                            for uuid, call in paced.items()
                        }
                    # The last look at the calling window: the calls start at `start`, or
                    # now if that is later (nothing waits between the mark and the dial).
                    calls = self._in_window(windowed, paced, max(start, time.time()))
                    dialed = await self._mark_dialed(calls, recorded_at, start)
                    # The mark is committed: from here to the INVITEs nothing may wait (a
                    # dialer killed in between spends the try without a call). The pacing
                    # slot was taken and the messages built before the mark.
                    for call_uuid in calls:
                        if call_uuid in dialed:
                            self._backend.start_call(call_uuid)
                            prepared.discard(call_uuid)
                    for request in group:
                        if request.call_uuid in dialed:
                            self._dial(request, plans[request.call_uuid])
                        elif request.call_uuid in calls:
                            log.warning(
                                "not dialing: past the deadline of its record",
                                extra={"action": "too_late", **_ids(request)},
                            )
                self._held_count -= len(group)
                waiting -= len(group)
            # The calls rows now guard the attempts: a redelivery can never dial them again.
            await bus.settle(msg, bus.Verdict.ACK)
        finally:
            if not recording.done():  # failed while building: no mark may follow
                recording.cancel()
            if extending is not None and not extending.done():
                extending.cancel()
            for call_uuid in prepared:
                self._backend.forget_call(call_uuid)
            self._held_count -= waiting
            self._slot_free.set()  # what was not started (nak) frees its room too

    def _in_window(
        self,
        windowed: dict[str, events_pb2.DialRequest],
        calls: dict[str, _ToDial],
        start: float,
    ) -> dict[str, _ToDial]:
        """The calls whose calling window is still open at `start` (`windowed`: the
        requests that have one, by call_uuid). The others are not dialed: their end is
        reported as `outside_window`, and their records are left for the dispatcher to
        forget (their attempts are made again when the windows open)."""
        if not windowed:
            return calls
        closed = [
            request
            for uuid in calls
            if (request := windowed.get(uuid)) is not None and window_closed(request, start)
        ]
        if not closed:
            return calls
        for request in closed:
            log.info(
                "not dialing: its calling window closed",
                extra={
                    "action": "outside_window",
                    "window_closes_at_unix_ms": request.window_closes_at_unix_ms,
                    **_ids(request),
                },
            )
            metrics.calls_with_outcome(CallOutcome.OUTSIDE_WINDOW).inc()
            self._events.publish_nowait(outside_window_event(request))
        refused = {request.call_uuid for request in closed}
        return {uuid: call for uuid, call in calls.items() if uuid not in refused}

    async def _until_mark(self, start: float) -> None:
        """Sleep until the mark of calls starting at `start` must begin: its UPDATE and
        COMMIT each take their usual duration, so that the commit ends at `start`."""
        await self._sleep_until(start - self._update_lead - self._commit_lead)

    async def _sleep_until(self, moment: float) -> None:
        """Sleep until `moment` (time.time()), woken its usual lateness early."""
        target = moment - min(self._wakes)
        wait = target - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
            late = time.time() - target  # how late the loop woke us
            self._wakes.append(min(max(late, 0.0), MAX_MARK_LEAD_SECONDS))

    def _paced(
        self, calls: dict[str, _ToDial], due: float, slots: dict[str, float]
    ) -> list[tuple[float, dict[str, _ToDial]]]:
        """The calls by the start the backend's calls-per-second cap gives them (below the
        cap: all at `due`), earliest first; their slots are taken now, before the mark
        (unless `slots` has one reserved already)."""
        starts: dict[float, dict[str, _ToDial]] = {}
        for call_uuid, call in calls.items():
            start = slots.get(call_uuid)
            if start is None:
                start = self._backend.reserve_start(due)
            starts.setdefault(start, {})[call_uuid] = call
        return sorted(starts.items())

    async def _mark_dialed(
        self, calls: dict[str, _ToDial], recorded_at: float, due: float
    ) -> set[str]:
        """Mark the calls dialed (committed before any is dialed, so that an attempt whose
        call may have rung is never dialed again); the ones marked. The database being
        unavailable, tried again until their deadline: not marked, they are not dialed, and
        their attempts are dialed again without spending a try."""
        if not calls:
            return set()
        deadline = recorded_at + max(call.record.within for call in calls.values())
        records = {uuid: call.record for uuid, call in calls.items()}
        delay = 0.05
        while True:
            try:
                began = time.monotonic()
                async with transaction(self._engine) as conn:
                    marked = await repository.mark_calls_dialed(
                        conn, records, datetime.fromtimestamp(due, UTC)
                    )
                    updated = time.monotonic()
                    # Not committed before it must be: a commit that waits for the due time
                    # would widen the window in which a killed dialer spends tries. The
                    # commit starts its usual duration early and the calls start as it
                    # returns, without waiting for the due time (a few ms early at most).
                    if marked:
                        await self._sleep_until(due - self._commit_lead)
                    committing = time.monotonic()
                committed = time.monotonic()
                self._update_lead = _moving_average(self._update_lead, updated - began)
                self._commit_lead = _moving_average(self._commit_lead, committed - committing)
                return marked
            except StorageUnavailable:
                if time.monotonic() + delay > deadline:
                    return set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _extend_deadlines(
        self, late: dict[str, tuple[repository.Recorded, float]], recorded_at: float
    ) -> dict[str, repository.Recorded]:
        """Later deadlines for the records of calls the calls-per-second cap starts late
        (with the seconds from now each needs); the records whose deadline moved. The
        others keep theirs: not marked in time, they are not dialed, and the dispatcher
        dials their attempts again without spending a try."""
        began = time.monotonic()
        try:
            async with transaction(self._engine) as conn:
                moved = await repository.extend_deadlines(
                    conn, late, self._settings.longest_call_seconds
                )
        except StorageUnavailable:
            moved = {}
        if len(moved) < len(late):
            log.warning(
                "a call the cap starts late keeps its record's deadline",
                extra={"action": "too_late", "count": len(late) - len(moved)},
            )
        # Seconds from recorded_at, counted from before the statement, like the records'.
        return {
            uuid: repository.Recorded(began - recorded_at + seconds_left, dial_by)
            for uuid, (dial_by, seconds_left) in moved.items()
        }

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._slot_free.set()
        if not call.cancelled() and call.exception() is not None:
            log.error("call handler failed", exc_info=call.exception(), extra={"action": "crash"})

    async def _record_calls(
        self,
        requests: Sequence[events_pb2.DialRequest],
        hold: float,
        now: _DialNow | None = None,
    ) -> dict[str, _ToDial] | None:
        """Record the calls (due within `hold` seconds) in one transaction; the ones to
        dial, with the tenant's account for each (None: the operator's default), or None
        if the database was unavailable (nothing recorded).

        `now`: calls due already, built on the operator's default account. Those recorded
        on that account are also marked dialed in this transaction, once all are built,
        and started (their INVITEs sent) as soon as it is committed, in the same turn of
        the event loop; `now.started` tells which."""
        new_calls = [
            repository.NewCall(
                call_uuid=request.call_uuid,
                client_id=request.client_id,
                queue_id=request.queue_id,
                task_id=request.task_id,
                attempt=request.attempt,
                backend=self._backend.name,
            )
            for request in requests
        ]
        pairs = {(r.client_id, r.extension_id) for r in requests}
        try:
            async with transaction(self._engine) as conn:
                started = await repository.record_calls(
                    conn,
                    new_calls,
                    self._settings.longest_call_seconds,
                    hold,
                    DIAL_GRACE_SECONDS,
                )
                accounts = await repository.tenant_accounts(conn, pairs)
                marked: set[str] = set()
                if now is not None and now.calls:
                    by_uuid = {r.call_uuid: r for r in requests}
                    due_now = {
                        uuid: started.may_dial[uuid]
                        for uuid in now.calls
                        if uuid in started.may_dial
                        and accounts.get((by_uuid[uuid].client_id, by_uuid[uuid].extension_id))
                        is None
                    }
                    if due_now:
                        await now.built.wait()
                        # A call whose window closed is left to the check before the other
                        # marks, which reports it (its start slot is taken: no wait there).
                        moment = time.time()
                        due_now = {
                            uuid: recorded
                            for uuid, recorded in due_now.items()
                            if not window_closed(by_uuid[uuid], moment)
                        }
                        marked = await repository.mark_calls_dialed(
                            conn, due_now, datetime.fromtimestamp(now.at, UTC)
                        )
        except StorageUnavailable:
            return None
        # Committed: the marked calls' INVITEs leave now, before anything else runs.
        if now is not None:
            for request in requests:  # in the message's order
                if request.call_uuid in marked:
                    self._backend.start_call(request.call_uuid)
            now.started = marked
        recorded: dict[str, _ToDial] = {}
        for request in requests:
            if request.call_uuid in started.too_late:
                log.warning(
                    "not dialing: the attempt's lease ends before the longest call could",
                    extra={"action": "too_late", **_ids(request)},
                )
            elif request.call_uuid not in started.may_dial:
                log.info(
                    "not dialing: attempt gone or already dialed",
                    extra={"action": "skip", **_ids(request)},
                )
            else:
                account = accounts.get((request.client_id, request.extension_id))
                recorded[request.call_uuid] = _ToDial(account, started.may_dial[request.call_uuid])
        return recorded

    async def _release(self, call_uuids: Sequence[str]) -> None:
        """Give back recorded calls this dialer will not dial (it is stopping)."""
        try:
            async with transaction(self._engine) as conn:
                await repository.release_calls(conn, call_uuids)
        except StorageUnavailable:
            pass  # they are taken over once their deadline passes

    def _dial(self, request: events_pb2.DialRequest, plan: CallPlan) -> None:
        """Hand one call, marked dialed (and started, if the backend prepared it), to the
        backend."""
        call = asyncio.create_task(self._call(request, plan))
        self._calls.add(call)
        call.add_done_callback(self._call_done)

    async def _call(self, request: events_pb2.DialRequest, plan: CallPlan) -> None:
        context = _ids(request)
        if not _may_use_account(request, plan.account):
            # The api refuses such tasks; one that got past it (written straight into the
            # database, or its account taken away since) is not dialed on the operator's
            # account, nor on another tenant's.
            log.warning("not dialing: foreign extension", extra={"action": "refuse", **context})
            now = datetime.now(UTC)
            comment = (
                f"not dialed: extension {request.extension_id} is not a SIP account of "
                f"client {request.client_id}"
            )
            report = CallReport(CallOutcome.ERROR, comment, started=now, ended=now)
            self._end(request, report)
            return
        log.info("dialing", extra={"action": "dial", **context})
        if request.due_at_unix_ms:
            metrics.DISPATCH_LATENESS.observe(max(0.0, time.time() - request.due_at_unix_ms / 1000))

        async def connected() -> None:
            if request.skip_connected_event:
                self._records.note_connected(request.call_uuid)  # the call goes on meanwhile
            else:  # stored before the call goes on, so it is ahead of the end event
                await self._events.publish(_event(request, events_pb2.CallEvent.KIND_CONNECTED))

        report = await self._backend.place_call(plan, connected)
        # The record says which limits the call ran with (the backends apply the same).
        settings = self._settings
        self._end(
            request,
            report._replace(
                ring_timeout=limit(plan.ring_timeout, settings.ring_timeout_seconds),
                max_call=limit(plan.max_call, settings.max_call_seconds),
            ),
        )

    def _end(self, request: events_pb2.DialRequest, report: CallReport) -> None:
        """Hand a call's record and end event to the writers."""
        metrics.calls_with_outcome(report.outcome).inc()
        ended = _event(request, events_pb2.CallEvent.KIND_ENDED, report)
        self._records.call_ended(request.call_uuid, report, ended)
        log.info(
            "call ended",
            extra={"action": "call_ended", "outcome": report.outcome, **_ids(request)},
        )


def _plan(request: events_pb2.DialRequest, account: tuple[str, str] | None) -> CallPlan:
    return CallPlan(
        call_uuid=request.call_uuid,
        a_numbers=(request.a_number, *request.extended_a_numbers),
        b_number=request.b_number,
        caller_id_name=request.caller_id_name,
        caller_id_number=request.caller_id_number,
        extension_id=request.extension_id,
        account=account,
        ring_timeout=request.ring_timeout,
        max_call=request.call_duration,
    )


def _may_use_account(request: events_pb2.DialRequest, account: tuple[str, str] | None) -> bool:
    """Whether the call may go out: on the tenant's own account, or on the operator's
    default for extension 0 only."""
    return account is not None or request.extension_id == DEFAULT_EXTENSION


def _moving_average(average: float, latest: float) -> float:
    """The next lead: the average moved toward the latest duration, at most the cap."""
    return average + (min(latest, MAX_MARK_LEAD_SECONDS) - average) * MARK_LEAD_WEIGHT


def _event(
    request: events_pb2.DialRequest, kind: int, report: CallReport | None = None
) -> events_pb2.CallEvent:
    return events_pb2.CallEvent(
        kind=kind,  # type: ignore[arg-type]
        task_id=request.task_id,
        attempt=request.attempt,
        call_uuid=request.call_uuid,
        outcome=OUTCOME_TO_PROTO[report.outcome] if report else events_pb2.CALL_OUTCOME_UNSPECIFIED,
        comment=report.comment if report else "",
    )
