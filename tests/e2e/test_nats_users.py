"""Each service logs in to NATS as its own user, allowed only the subjects it uses
(deploy/nats_users.py): what a user must not do, nats-server itself refuses. The stack's
services run as these users, so every other e2e test proves that what they must do is
allowed; here a few of those are also checked directly.

A refused publish or subscription is not an exception in the client: the server answers with
an asynchronous `-ERR 'Permissions Violation ...'` (nats-py's error_cb), and the message is
dropped (a JetStream request then times out). Each check therefore collects those errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from deploy import nats_users
from deploy.local.stack import Stack
from services.common import bus
from tests.support.stacks import permission_violations
from tests.support.waiting import wait_for_async

WAIT_SECONDS = 30


@dataclass
class Session:
    """A connection as one user, with the permission errors the server reported to it."""

    client: NATS
    jetstream: JetStreamContext
    errors: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]

    async def refused(self, what: str) -> str:
        """The server's error naming `what` (e.g. 'publish to "callbacks.dial"'), once it
        arrives; the flush makes sure the server has read everything sent before."""
        await self.client.flush(timeout=WAIT_SECONDS)
        return await wait_for_async(
            lambda: next((e for e in self.violations() if what in e.lower()), None),
            WAIT_SECONDS,
            f"the server to refuse {what}",
        )


@pytest.fixture
async def connect(stack: Stack) -> AsyncIterator[Callable[[str], Awaitable[Session]]]:
    sessions: list[Session] = []

    async def connect_as(user: str) -> Session:
        login = stack.nats_login(user)
        assert login.user == user, "the stack runs NATS without users"
        errors: list[str] = []

        async def on_error(err: Exception) -> None:
            errors.append(str(err))

        client = await nats.connect(
            stack.nats_url,
            user=login.user,
            password=login.password.get_secret_value() if login.password else None,
            inbox_prefix=login.inbox_prefix,
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=10,
        )
        session = Session(client, client.jetstream(timeout=5), errors)
        sessions.append(session)
        return session

    yield connect_as
    for session in sessions:
        await session.client.close()


@pytest.mark.parametrize(
    "credentials",
    [{}, {"user": "dialer", "pass": "guess"}, {"user": "api", "pass": ""}],
    ids=["anonymous", "wrong password", "the api"],
)
async def test_nats_refuses_a_connection_without_a_valid_password(
    stack: Stack, credentials: dict[str, str]
) -> None:
    """The api has no NATS user (it never uses NATS): like anyone else who reaches the
    server, it cannot connect anonymously or guess a password. Spoken in the protocol
    itself: nats-py leaves a refused connection's socket open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.settings.nats_port)
    try:
        info = await asyncio.wait_for(reader.readline(), WAIT_SECONDS)
        assert info.startswith(b"INFO ")
        connect = {"verbose": False, "pedantic": False, "name": "intruder", **credentials}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), WAIT_SECONDS)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply.startswith(b"-ERR 'Authorization Violation'"), reply


# (user, subject): the notifier cannot ask for calls or announce their results, a dialer
# cannot fake a task's webhooks, nobody but the dispatcher touches streams, nobody pulls from
# another's consumer or acknowledges its messages, the monitor never reads a message.
REFUSED_PUBLISH = [
    ("notifier", bus.SUBJECT_DIAL),
    ("notifier", bus.SUBJECT_CALL_BATCH),
    ("notifier", f"{bus.SUBJECT_EVENTS}.success"),
    ("notifier", "$JS.API.CONSUMER.MSG.NEXT.CALLBACK_DIAL.dialer"),
    ("notifier", "$JS.API.STREAM.DELETE.CALLBACK_EVENTS"),
    ("notifier", "$JS.API.CONSUMER.CREATE.CALLBACK_EVENTS"),  # an ephemeral reader
    ("dialer", f"{bus.SUBJECT_EVENTS}.after"),
    ("dialer", "$JS.API.CONSUMER.MSG.NEXT.CALLBACK_EVENTS.notifier"),
    ("dialer", "$JS.API.CONSUMER.MSG.NEXT.CALLBACK_CALLS.dispatcher-calls"),
    ("dialer", "$JS.API.STREAM.CREATE.CALLBACK_DIAL"),
    ("dialer", "$JS.API.CONSUMER.DELETE.CALLBACK_DIAL.dialer"),
    ("dialer", "$JS.API.DIRECT.GET.CALLBACK_EVENTS"),
    ("dialer", "$JS.ACK.CALLBACK_CALLS.dispatcher-calls.1.1.1.1.0"),
    ("dispatcher", bus.SUBJECT_CALL_BATCH),
    ("dispatcher", "$JS.API.STREAM.DELETE.CALLBACK_DIAL"),
    ("dispatcher", "$JS.API.STREAM.PURGE.CALLBACK_EVENTS"),
    ("dispatcher", "$JS.API.CONSUMER.MSG.NEXT.CALLBACK_DIAL.dialer"),
    ("dispatcher", "$JS.API.STREAM.MSG.GET.CALLBACK_EVENTS"),
    ("monitor", bus.SUBJECT_DIAL),
    ("monitor", "$JS.API.CONSUMER.MSG.NEXT.CALLBACK_EVENTS.notifier"),
    ("monitor", "$JS.API.STREAM.MSG.GET.CALLBACK_EVENTS"),
    ("monitor", "$JS.API.DIRECT.GET.CALLBACK_EVENTS"),
    ("monitor", "$JS.API.CONSUMER.CREATE.CALLBACK_EVENTS"),
]


@pytest.mark.parametrize(("user", "subject"), REFUSED_PUBLISH)
async def test_a_user_may_not_publish_what_it_does_not_use(
    connect: Callable[[str], Awaitable[Session]], user: str, subject: str
) -> None:
    session = await connect(user)
    await session.client.publish(subject, b"not for you")
    await session.refused(f'publish to "{subject.lower()}"')


# Reading messages around the consumers (a plain subscription to the stream's subjects sees
# every tenant's task snapshots), or another user's replies (JetStream API answers and the
# messages fetched from its consumer).
REFUSED_SUBSCRIBE = [
    (user, subject)
    for user in ("dispatcher", "dialer", "notifier", "monitor")
    for subject in ("callbacks.>", f"{bus.SUBJECT_EVENTS}.>", bus.SUBJECT_DIAL, "_INBOX.>", ">")
] + [
    ("dialer", "_INBOX.notifier.>"),
    ("dialer", "_INBOX.dispatcher.>"),
    ("notifier", "_INBOX.dialer.>"),
    ("dispatcher", "_INBOX.notifier.>"),
    ("monitor", "_INBOX.dispatcher.>"),
    ("notifier", "$JS.ACK.>"),
]


@pytest.mark.parametrize(("user", "subject"), REFUSED_SUBSCRIBE)
async def test_a_user_may_not_subscribe_to_others_messages_or_replies(
    connect: Callable[[str], Awaitable[Session]], user: str, subject: str
) -> None:
    session = await connect(user)
    await session.client.subscribe(subject)
    await session.refused(f'subscription to "{subject.lower()}"')


@pytest.mark.parametrize("user", nats_users.SERVICE_USERS)
async def test_a_service_may_read_its_own_consumer_through_its_own_inbox(
    connect: Callable[[str], Awaitable[Session]], user: str
) -> None:
    consumer = {
        "dispatcher": bus.CONSUMER_DISPATCHER,
        "dialer": bus.CONSUMER_DIALER,
        "notifier": bus.CONSUMER_NOTIFIER,
    }[user]
    session = await connect(user)
    info = await session.jetstream.consumer_info(consumer.stream.name, consumer.durable)
    assert info.name == consumer.durable
    await session.client.flush(timeout=WAIT_SECONDS)
    assert session.violations() == []


async def test_the_dispatcher_reads_every_consumers_lag_and_keeps_the_streams(
    connect: Callable[[str], Awaitable[Session]],
) -> None:
    session = await connect("dispatcher")
    for consumer in bus.CONSUMERS:
        await session.jetstream.consumer_info(consumer.stream.name, consumer.durable)
    await bus.ensure_streams(session.jetstream)  # create or update: what it does at start
    await session.client.flush(timeout=WAIT_SECONDS)
    assert session.violations() == []


async def test_a_dialer_passes_dial_requests_on_and_reports_calls(
    connect: Callable[[str], Awaitable[Session]],
) -> None:
    """Both stored by JetStream (a PubAck reached the dialer's inbox). The payloads are empty
    batches: the consumers acknowledge them without doing anything."""
    session = await connect("dialer")
    for subject in (bus.SUBJECT_DIAL, bus.SUBJECT_CALL_BATCH):
        ack = await session.jetstream.publish(subject, b"")
        assert ack.stream in (bus.STREAM_DIAL.name, bus.STREAM_CALLS.name)
    assert session.violations() == []


async def test_the_monitor_sees_streams_and_consumers_but_no_message(
    connect: Callable[[str], Awaitable[Session]],
) -> None:
    session = await connect("monitor")
    names = {s.config.name for s in await session.jetstream.streams_info()}
    assert {s.name for s in bus.STREAMS} <= names
    for consumer in bus.CONSUMERS:
        await session.jetstream.consumer_info(consumer.stream.name, consumer.durable)
    await session.client.flush(timeout=WAIT_SECONDS)
    assert session.violations() == []
    with pytest.raises((NatsError, asyncio.TimeoutError)):
        await session.jetstream.get_last_msg(bus.STREAM_EVENTS.name, f"{bus.SUBJECT_EVENTS}.>")


def test_the_services_were_never_refused_anything(stack: Stack) -> None:
    """So far (the stack's fixture checks again at its end)."""
    assert permission_violations(stack) == []
