"""Dial requests (NATS) -> calls through the telephony backend -> call events (NATS).

Requests come up to the dispatcher's lookahead before they are due: they wait here (not
acknowledged, so a dialer that dies meanwhile loses nothing) and are dialed at their time.

Delivery: recorded in PostgreSQL -> ack, then dial; attempt no longer current or already
dialed, or too little of its lease left for the longest call -> ack without dialing;
database down -> nak with a delay; unreadable -> term.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import bus, metrics
from services.common.db import transaction
from services.common.errors import StorageUnavailable
from services.common.supervision import exit_when_failed
from services.dialer import repository
from services.dialer.backend import CallPlan, CallReport, TelephonyBackend
from services.dialer.records import RecordWriter
from services.dialer.settings import DialerSettings

log = logging.getLogger(__name__)

DURABLE = "dialer"
# A request is never held longer than this, whatever its due time says: the dispatcher
# claims at most 5 s ahead, and a dialer whose clock runs behind must not sit on requests.
MAX_HOLD_SECONDS = 5.0
OUTCOMES = {
    "connected": events_pb2.CALL_OUTCOME_CONNECTED,
    "a_busy": events_pb2.CALL_OUTCOME_A_BUSY,
    "a_no_answer": events_pb2.CALL_OUTCOME_A_NO_ANSWER,
    "a_rejected": events_pb2.CALL_OUTCOME_A_REJECTED,
    "b_busy": events_pb2.CALL_OUTCOME_B_BUSY,
    "b_no_answer": events_pb2.CALL_OUTCOME_B_NO_ANSWER,
    "b_rejected": events_pb2.CALL_OUTCOME_B_REJECTED,
    "error": events_pb2.CALL_OUTCOME_ERROR,
}


def _ids(request: events_pb2.DialRequest) -> dict[str, object]:
    return {
        "client_id": request.client_id,
        "queue_id": request.queue_id,
        "task_id": request.task_id,
        "attempt": request.attempt,
        "call_uuid": request.call_uuid,
    }


def _by_due_time(messages: Sequence[Msg], now_ms: float) -> dict[float, list[Msg]]:
    """Messages grouped by when to dial them: due ones (and unreadable ones, which are dealt
    with at once) under now_ms, the others under their due time."""
    groups: dict[float, list[Msg]] = {}
    for msg in messages:
        request = parse(msg)
        due_ms = request.due_at_unix_ms if request is not None else 0
        groups.setdefault(float(due_ms) if due_ms > now_ms else now_ms, []).append(msg)
    return groups


def parse(msg: Msg) -> events_pb2.DialRequest | None:
    try:
        request = events_pb2.DialRequest.FromString(msg.data)
    except DecodeError:
        return None
    if not (request.task_id and request.attempt and request.call_uuid and request.a_number):
        return None
    return request


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
        self._held: set[asyncio.Task[None]] = set()  # requests waiting for their due time
        self._held_count = 0
        self._slot_free = asyncio.Event()
        self._records = RecordWriter(engine, settings.report_retry_seconds)
        self._record_writer: asyncio.Task[None] | None = None
        self._stopping = False

    def stop(self) -> None:
        """Take no new calls; the ones in progress go on until they end."""
        self._stopping = True
        self._slot_free.set()

    async def calls_finished(self) -> None:
        if self._held:
            await asyncio.wait(set(self._held))
        if self._calls:
            await asyncio.wait(set(self._calls))
        if self._record_writer is not None:
            self._record_writer.cancel()

    async def run(self) -> None:
        self._record_writer = asyncio.create_task(self._records.run())
        subscription = await bus.pull_consumer_when_ready(
            self._jetstream, bus.STREAM_DIAL, DURABLE, ack_wait_seconds=30
        )
        while not self._stopping:
            free = self._settings.max_concurrent_calls - len(self._calls) - self._held_count
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            messages = await bus.fetch(subscription, min(free, 256))
            now_ms = time.time() * 1000
            for due_ms, group in _by_due_time(messages, now_ms).items():
                if due_ms <= now_ms:
                    await self._start_calls(group)
                else:
                    self._hold_until(due_ms / 1000, group)

    def _hold_until(self, due: float, messages: Sequence[Msg]) -> None:
        """Start these calls at `due` (Unix seconds), without holding up the fetch loop."""

        async def start_when_due() -> None:
            try:
                await asyncio.sleep(min(due - time.time(), MAX_HOLD_SECONDS))
                if self._stopping:  # another dialer takes them now, not after the ack wait
                    for msg in messages:
                        await bus.settle(msg, "nak")
                    return
                await self._start_calls(messages)
            finally:
                self._held_count -= len(messages)

        self._held_count += len(messages)
        held = asyncio.create_task(start_when_due())
        self._held.add(held)
        held.add_done_callback(self._held.discard)
        held.add_done_callback(exit_when_failed)  # as if the fetch loop itself had failed

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._slot_free.set()
        if not call.cancelled() and call.exception() is not None:
            log.error("call handler failed", exc_info=call.exception(), extra={"action": "crash"})

    async def _start_calls(self, messages: Sequence[Msg]) -> None:
        """Record a batch of calls in one transaction, then place each one concurrently."""
        requests: list[tuple[Msg, events_pb2.DialRequest]] = []
        for msg in messages:
            request = parse(msg)
            if request is None:
                log.error("poison dial request", extra={"action": "term", "subject": msg.subject})
                await bus.settle(msg, "term")
            else:
                requests.append((msg, request))
        new_calls = [
            repository.NewCall(
                call_uuid=request.call_uuid,
                client_id=request.client_id,
                queue_id=request.queue_id,
                task_id=request.task_id,
                attempt=request.attempt,
                backend=self._backend.name,
            )
            for _, request in requests
        ]
        try:
            async with transaction(self._engine) as conn:
                started = await repository.start_calls(
                    conn, new_calls, self._settings.longest_call_seconds
                )
        except StorageUnavailable:
            for msg, _ in requests:
                await bus.settle(msg, "nak", delay=1.0)
            return
        for msg, request in requests:
            # The calls row now guards the attempt: a redelivery can never dial it again.
            await bus.settle(msg, "ack")
            if request.call_uuid in started.too_late:
                log.warning(
                    "not dialing: the attempt's lease ends before the longest call could",
                    extra={"action": "too_late", **_ids(request)},
                )
                continue
            if request.call_uuid not in started.may_dial:
                log.info(
                    "not dialing: attempt gone or already dialed",
                    extra={"action": "skip", **_ids(request)},
                )
                continue
            call = asyncio.create_task(self._call(request))
            self._calls.add(call)
            call.add_done_callback(self._call_done)

    async def _call(self, request: events_pb2.DialRequest) -> None:
        context = _ids(request)
        log.info("dialing", extra={"action": "dial", **context})
        if request.due_at_unix_ms:
            metrics.DISPATCH_LATENESS.observe(max(0.0, time.time() - request.due_at_unix_ms / 1000))
        metrics.CALLS_IN_PROGRESS.inc()
        plan = CallPlan(
            call_uuid=request.call_uuid,
            a_numbers=(request.a_number, *request.extended_a_numbers),
            b_number=request.b_number,
            caller_id_name=request.caller_id_name,
            caller_id_number=request.caller_id_number,
            extension_id=request.extension_id,
        )

        async def connected() -> None:
            await self._publish(request, events_pb2.CallEvent.KIND_CONNECTED, None)

        try:
            report = await self._backend.place_call(plan, connected)
        finally:
            metrics.CALLS_IN_PROGRESS.dec()
        metrics.CALLS.labels(report.outcome).inc()
        try:
            await self._records.save(request.call_uuid, report)
        except Exception:
            return  # not stored and not reported: the attempt's lease resolves it
        await self._publish(request, events_pb2.CallEvent.KIND_ENDED, report)
        log.info("call ended", extra={"action": "call_ended", "outcome": report.outcome, **context})

    async def _publish(
        self, request: events_pb2.DialRequest, kind: int, report: CallReport | None
    ) -> None:
        event = events_pb2.CallEvent(
            kind=kind,  # type: ignore[arg-type]
            task_id=request.task_id,
            attempt=request.attempt,
            call_uuid=request.call_uuid,
            outcome=OUTCOMES[report.outcome] if report else events_pb2.CALL_OUTCOME_UNSPECIFIED,
            comment=report.comment if report else "",
        )
        name = "connected" if kind == events_pb2.CallEvent.KIND_CONNECTED else "ended"
        await bus.publish_until_stored(
            self._jetstream,
            f"{bus.SUBJECT_CALLS}.{name}",
            event.SerializeToString(),
            f"{name}:{request.task_id}:{request.attempt}",
            give_up=self._settings.report_retry_seconds,
        )
