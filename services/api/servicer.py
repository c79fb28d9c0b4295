"""The gRPC edge of the api service: protobuf <-> domain values, authentication, no SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from scheduler.v1 import scheduler_pb2 as pb
from scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.api import idempotency, policy, repository, validation
from services.api.auth import TokenError, TokenVerifier, check_not_revoked
from services.api.revocation import RevocationTimes
from services.common.db import transaction
from services.common.errors import (
    Conflict,
    FieldViolation,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    QuotaExceeded,
    Unauthenticated,
)
from services.common.grpcserver import translate_errors
from services.common.task_view import task_to_proto
from services.common.tenancy import TenantDefaults
from services.common.timefmt import format_utc

_R = TypeVar("_R", bound=Message)

ME = "@me"
MAX_CLIENT_ID_LENGTH = 128  # the width of the client_id columns
# A 409 for an interval in use names this many of its queues at most.
QUEUES_NAMED = 20


def _fields(message: Message, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a client actually sent, by their published names."""
    data = MessageToDict(message, preserving_proto_field_name=True)
    return {k: v for k, v in data.items() if k not in exclude}


def _task_fields(
    task: pb.TaskInput | pb.UpdateTaskRequest, *, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """_fields of one TaskInput, without MessageToDict's generic walk over every field (a
    tenth of the api's CPU in a bulk add): the same dict, built from the fields set."""
    fields: dict[str, Any] = {
        field.name: value for field, value in task.ListFields() if field.name not in exclude
    }
    if "try_again_pause" in fields:
        fields["try_again_pause"] = MessageToDict(task.try_again_pause)
    if "callback_params" in fields:
        fields["callback_params"] = _fields(task.callback_params)
    return fields


def queue_to_proto(row: Row[Any]) -> pb.Queue:
    return pb.Queue(
        id=row.id,
        name=row.name,
        comment=row.comment,
        status=row.status,
        concurrent_task_limit=row.concurrent_task_limit,
        create_date_utc=format_utc(row.create_date_utc),
        interval_id=row.interval_id or 0,
        # A queue just created has no counters yet (its row comes from the INSERT).
        sched_task_count=getattr(row, "sched_task_count", 0),
        task_count=getattr(row, "task_count", 0),
        last_call_date=format_utc(row.last_call_at) if row.last_call_at else "",
    )


def interval_to_proto(row: Row[Any]) -> pb.Interval:
    return pb.Interval(
        id=row.id,
        name=row.name,
        timezone=row.timezone,
        conditions=[pb.IntervalCondition(**condition) for condition in row.conditions],
    )


def _interval_not_owned(interval_id: int) -> PolicyViolation:
    # The same answer for another client's interval and for none at all: nothing leaks.
    return PolicyViolation(
        "INTERVAL_NOT_OWNED",
        [FieldViolation("interval_id", f"{interval_id} is not an interval of this client")],
    )


def call_to_proto(row: Row[Any]) -> pb.CallRecord:
    record = dict(row.record or {})
    legs = [pb.CallLeg(**leg) for leg in record.get("legs", [])]
    return pb.CallRecord(
        call_uuid=row.call_uuid,
        task_id=row.task_id,
        scheduler_id=row.queue_id,
        attempt=row.attempt,
        result=row.result,
        comment=row.comment,
        started_utc=format_utc(row.started_at),
        ended_utc=format_utc(row.ended_at) if row.ended_at else "",
        duration_seconds=record.get("duration_seconds", 0.0),
        talk_seconds=record.get("talk_seconds", 0.0),
        ring_timeout=record.get("ring_timeout", 0.0),
        call_duration=record.get("call_duration", 0.0),
        legs=legs,
        backend=row.backend,
    )


class TaskSchedulerServicer(pb_grpc.TaskSchedulerServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        verifier: TokenVerifier,
        defaults: TenantDefaults,
        *,
        revocation_cache_seconds: float = 0.0,
    ) -> None:
        self._engine = engine
        self._verifier = verifier
        self._defaults = defaults
        self._revocations = RevocationTimes(self._load_tokens_not_before, revocation_cache_seconds)

    async def _load_tokens_not_before(self, client_id: str) -> datetime | None:
        async with transaction(self._engine) as conn:
            return await repository.select_tokens_not_before(conn, client_id)

    async def _client_id(self, requested: str, context: grpc.aio.ServicerContext) -> str:
        """The tenant this call may act for: the token's client, which the path must name,
        with a token issued after the client's tokens were last revoked.

        The value checked is the one the server received, never the URL: Envoy lets a
        query parameter override a path variable.
        """
        authorization = next(
            (str(v) for k, v in context.invocation_metadata() or () if k == "authorization"),
            None,
        )
        try:
            principal = self._verifier.verify(authorization)
        except TokenError as err:
            raise Unauthenticated(str(err)) from None
        if len(principal.client_id) > MAX_CLIENT_ID_LENGTH:
            raise Unauthenticated(f"client ids are at most {MAX_CLIENT_ID_LENGTH} characters")
        if requested not in (ME, principal.client_id):
            raise PermissionDenied(f"this token does not grant access to client {requested!r}")
        # Only a token that may act here costs a revocation lookup.
        not_before = await self._revocations.tokens_not_before(principal.client_id)
        try:
            check_not_revoked(principal, not_before)
        except TokenError as err:
            raise Unauthenticated(str(err)) from None
        return principal.client_id

    async def _create_once(
        self,
        rpc: str,
        client_id: str,
        request: pb.CreateQueueRequest | pb.CreateTasksRequest | pb.CreateIntervalRequest,
        reply_type: type[_R],
        context: grpc.aio.ServicerContext,
        create: Callable[[AsyncConnection], Awaitable[_R]],
    ) -> _R:
        """Run `create` in a transaction, once per Idempotency-Key: a request that repeats a
        key replays the stored reply (and says so in a response header); a request without
        a key costs nothing more."""
        key = next(
            (
                str(v)
                for k, v in context.invocation_metadata() or ()
                if k == idempotency.METADATA_KEY
            ),
            None,
        )
        if key is None:
            async with transaction(self._engine) as conn:
                return await create(conn)
        key = idempotency.checked_key(key)
        # The same request whether the path said "@me" or the client id.
        canonical = type(request).FromString(request.SerializeToString())
        canonical.client_id = client_id
        digest = idempotency.request_hash(rpc, canonical.SerializeToString(deterministic=True))
        async with transaction(self._engine) as conn:
            if await repository.claim_idempotency_key(
                conn, client_id, key, digest, idempotency.KEY_LIFETIME
            ):
                reply = await create(conn)
                await repository.store_idempotent_response(
                    conn, client_id, key, reply.SerializeToString()
                )
                return reply
            stored = await repository.select_idempotency_key(conn, client_id, key)
        if stored is None or stored.response is None:
            # Only if the key expired and was cleaned up in between: a retry takes it anew.
            raise Conflict(f"Idempotency-Key {key!r} is being reused; retry the request")
        if bytes(stored.request_hash) != digest:
            raise idempotency.reused(key)
        await context.send_initial_metadata(((idempotency.REPLAYED_HEADER, "true"),))
        return reply_type.FromString(bytes(stored.response))

    @translate_errors
    async def CreateQueue(
        self, request: pb.CreateQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.Queue:
        client_id = await self._client_id(request.client_id, context)
        new = validation.new_queue(_fields(request, exclude=("client_id",)))

        async def create(conn: AsyncConnection) -> pb.Queue:
            await repository.ensure_tenant(conn, client_id)
            if new.interval_id and not await repository.lock_interval_for_queue(
                conn, client_id, new.interval_id
            ):
                raise _interval_not_owned(new.interval_id)
            return queue_to_proto(await repository.insert_queue(conn, client_id, new))

        return await self._create_once("CreateQueue", client_id, request, pb.Queue, context, create)

    @translate_errors
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQueuesResponse:
        client_id = await self._client_id(request.client_id, context)
        page = validation.page({"after_id": request.after_id, "limit": request.limit})
        async with transaction(self._engine) as conn:
            rows = await repository.select_queues(conn, client_id, page)
        return pb.ListQueuesResponse(items=[queue_to_proto(r) for r in rows])

    @translate_errors
    async def GetQueue(
        self, request: pb.GetQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.Queue:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            row = await repository.select_queue(conn, client_id, request.scheduler_id)
        return queue_to_proto(_found(row, "task_scheduler", request.scheduler_id))

    @translate_errors
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: grpc.aio.ServicerContext
    ) -> pb.Queue:
        client_id = await self._client_id(request.client_id, context)
        changes = validation.queue_changes(_fields(request, exclude=("client_id", "scheduler_id")))
        async with transaction(self._engine) as conn:
            if changes.interval_id and not await repository.lock_interval_for_queue(
                conn, client_id, changes.interval_id
            ):
                raise _interval_not_owned(changes.interval_id)
            row = await repository.update_queue(conn, client_id, request.scheduler_id, changes)
            if row is not None and "interval_id" in changes.model_fields_set:
                await repository.release_held_tasks(conn, client_id, queue_id=row.id)
        return queue_to_proto(_found(row, "task_scheduler", request.scheduler_id))

    @translate_errors
    async def DeleteQueue(
        self, request: pb.DeleteQueueRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            deleted = await repository.delete_queue(conn, client_id, request.scheduler_id)
            await repository.uncount_tasks(conn, client_id, deleted or 0)
        _found(deleted, "task_scheduler", request.scheduler_id)
        return empty_pb2.Empty()

    @translate_errors
    async def CreateTasks(
        self, request: pb.CreateTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTasksResponse:
        client_id = await self._client_id(request.client_id, context)
        new_tasks = validation.new_tasks([_task_fields(t) for t in request.tasks])

        async def create(conn: AsyncConnection) -> pb.CreateTasksResponse:
            queue_found = await repository.lock_queue_for_new_tasks(
                conn, client_id, request.scheduler_id
            )
            _found(queue_found or None, "task_scheduler", request.scheduler_id)
            tenant = await repository.select_tenant_policy(
                conn, client_id, policy.caller_ids_of(new_tasks)
            )
            policy.check_new_tasks(new_tasks, tenant, self._defaults.denied_prefixes)
            rows = await repository.insert_tasks(conn, client_id, request.scheduler_id, new_tasks)
            stored, quota = await repository.count_new_tasks(
                conn, client_id, len(rows), self._defaults.max_stored_tasks
            )
            if stored > quota:  # raised inside the transaction: nothing is stored
                raise QuotaExceeded(
                    "max_stored_tasks",
                    f"quota of stored tasks exceeded: this client may store {quota} tasks and "
                    f"these {len(rows)} would make {stored}; delete finished tasks or ask the "
                    "operator for a larger quota",
                )
            return pb.CreateTasksResponse(items=[task_to_proto(r) for r in rows])

        return await self._create_once(
            "CreateTasks", client_id, request, pb.CreateTasksResponse, context, create
        )

    @translate_errors
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTasksResponse:
        client_id = await self._client_id(request.client_id, context)
        page = validation.page({"after_id": request.after_id, "limit": request.limit})
        filters = validation.task_filter(
            request.status, request.number, request.created_from_utc, request.created_to_utc
        )
        async with transaction(self._engine) as conn:
            queue = await repository.select_queue(conn, client_id, request.scheduler_id)
            _found(queue, "task_scheduler", request.scheduler_id)
            rows = await repository.select_tasks(
                conn, client_id, request.scheduler_id, page, filters
            )
        return pb.ListTasksResponse(items=[task_to_proto(r) for r in rows])

    @translate_errors
    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.Task:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            row = await repository.select_task(
                conn, client_id, request.scheduler_id, request.task_id
            )
        return task_to_proto(_found(row, "task", request.task_id))

    @translate_errors
    async def UpdateTask(
        self, request: pb.UpdateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.Task:
        client_id = await self._client_id(request.client_id, context)
        changes = validation.task_changes(
            _task_fields(request, exclude=("client_id", "scheduler_id", "task_id"))
        )
        async with transaction(self._engine) as conn:
            current = await repository.lock_task(
                conn, client_id, request.scheduler_id, request.task_id
            )
            current = _found(current, "task", request.task_id)
            validation.check_reschedulable(
                request.task_id,
                current.status,
                current.attempts,
                changes,
                caller_failures=current.caller_failures,
            )
            # The task as it will be passes the checks a new task would (its extension and
            # numbers too: the operator may have taken them away since it was created).
            task = validation.rescheduled(validation.stored_task(dict(current._mapping)), changes)
            tenant = await repository.select_tenant_policy(
                conn, client_id, policy.caller_ids_of([task])
            )
            policy.check_task(task, tenant, self._defaults.denied_prefixes)
            row = await repository.update_task(conn, request.task_id, changes)
            if changes.start_time_utc is not None or changes.callback_params is not None:
                await repository.release_held_tasks(
                    conn,
                    client_id,
                    task_id=request.task_id,
                    keep_due=changes.start_time_utc is not None,
                )
            if changes.start_time_utc is not None:
                await repository.wake_for_task(conn, request.scheduler_id, row.next_run_at)
        return task_to_proto(row)

    @translate_errors
    async def ListTaskCalls(
        self, request: pb.ListTaskCallsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTaskCallsResponse:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            rows = await repository.select_task_calls(
                conn, client_id, request.scheduler_id, request.task_id
            )
            # Records outlive a deleted task; with none, an unknown task is a 404.
            if not rows:
                task = await repository.select_task(
                    conn, client_id, request.scheduler_id, request.task_id
                )
                _found(task, "task", request.task_id)
        return pb.ListTaskCallsResponse(items=[call_to_proto(r) for r in rows])

    @translate_errors
    async def DeleteTask(
        self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            deleted = await repository.delete_task(
                conn, client_id, request.scheduler_id, request.task_id
            )
            await repository.uncount_tasks(conn, client_id, int(deleted))
        _found(deleted or None, "task", request.task_id)
        return empty_pb2.Empty()

    @translate_errors
    async def GetCallHistory(
        self, request: pb.GetCallHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.CallRecord:
        client_id = await self._client_id(request.client_id, context)
        call_uuid = validation.call_uuid(request.call_uuid)
        async with transaction(self._engine) as conn:
            row = await repository.select_call(conn, client_id, call_uuid)
        return call_to_proto(_found(row, "call", call_uuid))

    @translate_errors
    async def CreateInterval(
        self, request: pb.CreateIntervalRequest, context: grpc.aio.ServicerContext
    ) -> pb.Interval:
        client_id = await self._client_id(request.client_id, context)
        new = validation.new_interval(_fields(request, exclude=("client_id",)))

        async def create(conn: AsyncConnection) -> pb.Interval:
            await repository.lock_intervals_of_client(conn, client_id)
            limit = validation.MAX_INTERVALS_PER_CLIENT
            if await repository.count_intervals(conn, client_id) >= limit:
                raise QuotaExceeded(
                    "max_intervals",
                    f"a client may have at most {limit} intervals; delete one it no longer "
                    "uses, or change one instead",
                )
            return interval_to_proto(await repository.insert_interval(conn, client_id, new))

        return await self._create_once(
            "CreateInterval", client_id, request, pb.Interval, context, create
        )

    @translate_errors
    async def ListIntervals(
        self, request: pb.ListIntervalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIntervalsResponse:
        client_id = await self._client_id(request.client_id, context)
        page = validation.page({"after_id": request.after_id, "limit": request.limit})
        async with transaction(self._engine) as conn:
            rows = await repository.select_intervals(conn, client_id, page)
        return pb.ListIntervalsResponse(items=[interval_to_proto(r) for r in rows])

    @translate_errors
    async def GetInterval(
        self, request: pb.GetIntervalRequest, context: grpc.aio.ServicerContext
    ) -> pb.Interval:
        client_id = await self._client_id(request.client_id, context)
        async with transaction(self._engine) as conn:
            row = await repository.select_interval(conn, client_id, request.interval_id)
        return interval_to_proto(_found(row, "interval", request.interval_id))

    @translate_errors
    async def UpdateInterval(
        self, request: pb.UpdateIntervalRequest, context: grpc.aio.ServicerContext
    ) -> pb.Interval:
        client_id = await self._client_id(request.client_id, context)
        changes = validation.interval_changes(
            _fields(request, exclude=("client_id", "interval_id"))
        )
        async with transaction(self._engine) as conn:
            row = await repository.update_interval(conn, client_id, request.interval_id, changes)
            if row is not None:
                await repository.release_held_tasks(
                    conn, client_id, interval_id=request.interval_id
                )
        return interval_to_proto(_found(row, "interval", request.interval_id))

    @translate_errors
    async def DeleteInterval(
        self, request: pb.DeleteIntervalRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        client_id = await self._client_id(request.client_id, context)
        interval_id = request.interval_id
        async with transaction(self._engine) as conn:
            found = await repository.lock_interval_for_delete(conn, client_id, interval_id)
            _found(found or None, "interval", interval_id)
            users = await repository.select_queues_of_interval(
                conn, client_id, interval_id, QUEUES_NAMED + 1
            )
            if users:
                named = ", ".join(str(q) for q in users[:QUEUES_NAMED])
                more = " and more" if len(users) > QUEUES_NAMED else ""
                raise Conflict(
                    f"interval {interval_id} is in use by task_scheduler {named}{more}: set "
                    "their interval_id to 0 (or another interval) first"
                )
            await repository.delete_interval(conn, client_id, interval_id)
        return empty_pb2.Empty()


_T = TypeVar("_T")


def _found(value: _T | None, kind: str, ident: int | str) -> _T:
    if value is None:
        raise NotFound(f"{kind} {ident} not found")
    return value
