"""gRPC server bootstrap shared by the services: health, reflection, error mapping, shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.common.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SchedulerError,
    StorageUnavailable,
    Unauthenticated,
    Unprocessable,
)
from services.common.metrics import API_REQUESTS

log = logging.getLogger(__name__)

ERROR_DOMAIN = "callback-scheduler"
# Trailer read (and removed) by the REST gateway's Lua filter: see SchedulerError.http_status.
HTTP_STATUS_TRAILER = "x-http-status"

_CODES: dict[type[SchedulerError], int] = {
    InvalidInput: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    Conflict: code_pb2.ABORTED,
    QuotaExceeded: code_pb2.RESOURCE_EXHAUSTED,
    Unprocessable: code_pb2.FAILED_PRECONDITION,
    StorageUnavailable: code_pb2.UNAVAILABLE,
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_of(error: SchedulerError) -> status_pb2.Status:
    """google.rpc.Status for a domain error: code, message, ErrorInfo and field violations."""
    code = next((c for kind, c in _CODES.items() if isinstance(error, kind)), code_pb2.UNKNOWN)
    metadata = {"quota": error.quota} if isinstance(error, QuotaExceeded) else {}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if isinstance(error, InvalidInput):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=code, message=error.message, details=details)


Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def translate_errors(method: Method) -> Method:
    """Turn domain errors into gRPC statuses; never leak an exception's class name to clients."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            reply = await method(self, request, context)
            API_REQUESTS.labels(method.__name__, "ok").inc()
            return reply
        except SchedulerError as err:
            API_REQUESTS.labels(method.__name__, err.reason).inc()
            log.info(
                "request refused",
                extra={"action": "refuse", "rpc": method.__name__, "reason": err.reason},
            )
            status = rpc_status.to_status(status_of(err))
            trailers = tuple(status.trailing_metadata)
            if err.http_status is not None:
                trailers += ((HTTP_STATUS_TRAILER, str(err.http_status)),)
            await context.abort(status.code, status.details, trailers)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # abort() raises an exception of grpc's own: let it through untouched.
            if isinstance(err, grpc.aio.AbortError):
                raise
            API_REQUESTS.labels(method.__name__, "INTERNAL").inc()
            log.exception("unexpected error", extra={"action": "crash", "rpc": method.__name__})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper  # type: ignore[return-value]


class CannotListen(RuntimeError):
    """The address is taken (or not ours to bind)."""


async def start_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    max_message_bytes: int = 32 * 1024 * 1024,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A started grpc.aio server with health and reflection, every service SERVING."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port then starts
            # without error and the kernel shares the connections between the two (a client
            # of the api got "Method not found" from another stack's notifier half the time).
            # A taken port must be an error at start.
            ("grpc.so_reuseport", 0),
        ]
    )
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:  # grpc.aio raises where the sync server returns 0
        raise CannotListen(f"cannot listen on {address}: address in use or not available") from err
    if bound == 0:
        raise CannotListen(f"cannot listen on {address}: address in use or not available")
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer


async def serve(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    grace_seconds: float = 10.0,
    shutdown_deadline_seconds: float = 30.0,
    max_message_bytes: int = 32 * 1024 * 1024,
) -> None:
    """Run a grpc.aio server with health and reflection until SIGTERM/SIGINT, then stop it
    and run `on_shutdown`; a stop that takes longer than `shutdown_deadline_seconds` ends the
    process (exit status 70) after logging where each task was."""
    server, health_servicer = await start_server(
        address, register, max_message_bytes=max_message_bytes
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Said once a stop signal is handled: whoever waits for this line may send one.
    log.info("serving", extra={"action": "start", "address": address})
    await stop.wait()

    log.info("stopping", extra={"action": "stop"})
    watchdog = threading.Timer(
        shutdown_deadline_seconds, _give_up, (loop, shutdown_deadline_seconds)
    )
    watchdog.daemon = True
    watchdog.start()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    if on_shutdown is not None:
        await on_shutdown()
    # The watchdog is left running: asyncio.run's own clean-up (cancelling what is left)
    # comes after this and can hang too; a daemon thread ends with the process.


def _give_up(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """The watchdog's end of a stop that hangs. A process whose database and NATS went away
    with its launcher once spent two hours in its stop; whatever hangs, a stopped service must
    end (its leases and redeliveries cover the work it leaves). A thread, not a loop timer:
    it fires even if the event loop is blocked."""
    try:
        # Read from another thread while the loop runs: good enough for a last report.
        stacks = {task.get_name(): _await_chain(task) for task in asyncio.all_tasks(loop)}
    except Exception as err:  # the report must never keep the process alive
        stacks = {"error": repr(err)}
    log.error(
        "shutdown did not finish in time; exiting",
        extra={"action": "stop_timeout", "deadline_seconds": deadline, "tasks": stacks},
    )
    logging.shutdown()
    os._exit(70)


def _await_chain(task: asyncio.Task[Any]) -> str:
    """Where a task waits: each coroutine it awaits, outermost first (Task.get_stack shows
    only the outermost frame of a suspended task)."""
    places = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            places.append(repr(awaited)[:200])
            break
        places.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(places)
