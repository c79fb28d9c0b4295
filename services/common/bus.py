"""NATS JetStream: connection, the streams the services share, publishing, pull consumers.

Subjects and their payloads are documented in proto/scheduler/v1/events.proto.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import assert_never
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from pydantic import SecretStr

from services.common.retry import retry

log = logging.getLogger(__name__)

SUBJECT_DIAL = "callbacks.dial"
SUBJECT_CALLS = "callbacks.calls"  # .connected | .ended
# What the dialers publish on: a batch of call events (CallEvents).
SUBJECT_CALL_BATCH = f"{SUBJECT_CALLS}.batch"
SUBJECT_EVENTS = "callbacks.events"  # .before | .before_again | .success | .after

# Long enough to absorb any re-publish after a crash of a publisher (outbox, dialer).
DUPLICATE_WINDOW_SECONDS = 600.0


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    max_age_seconds: float | None = None


STREAM_DIAL = Stream("CALLBACK_DIAL", (SUBJECT_DIAL,), RetentionPolicy.WORK_QUEUE)
STREAM_CALLS = Stream("CALLBACK_CALLS", (f"{SUBJECT_CALLS}.>",), RetentionPolicy.WORK_QUEUE)
STREAM_EVENTS = Stream(
    "CALLBACK_EVENTS", (f"{SUBJECT_EVENTS}.>",), RetentionPolicy.LIMITS, 7 * 24 * 3600.0
)
STREAMS = (STREAM_DIAL, STREAM_CALLS, STREAM_EVENTS)


@dataclass(frozen=True)
class Consumer:
    """A service's durable pull consumer on one stream."""

    stream: Stream
    durable: str


CONSUMER_DIALER = Consumer(STREAM_DIAL, "dialer")
CONSUMER_DISPATCHER = Consumer(STREAM_CALLS, "dispatcher-calls")
CONSUMER_NOTIFIER = Consumer(STREAM_EVENTS, "notifier")
CONSUMERS = (CONSUMER_DIALER, CONSUMER_DISPATCHER, CONSUMER_NOTIFIER)


@dataclass(frozen=True)
class NatsLogin:
    """Who a service is on NATS (deploy/nats_users.py lists what each user may do), and the
    CA that the server's certificate must be signed by (TLS); all None: anonymous, plain."""

    user: str | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None

    @property
    def inbox_prefix(self) -> str:
        """Replies to this user's requests come under its own prefix, the only inboxes its
        permissions let it subscribe to: no service can read another's replies."""
        return f"_INBOX.{self.user}" if self.user else "_INBOX"


async def connect(
    url: str,
    name: str,
    login: NatsLogin | None = None,
    *,
    create_streams: bool = False,
    stream_replicas: int = 1,
) -> tuple[NATS, JetStreamContext]:
    """Connect as `login` (reconnecting forever). With `create_streams` (the dispatcher, the
    only user allowed to), make sure the streams exist with `stream_replicas` copies (3 on a
    NATS cluster); the others' consumers wait for them (pull_consumer_when_ready)."""
    login = login or NatsLogin()

    async def reconnected() -> None:
        log.info("nats reconnected", extra={"action": "nats_reconnected"})

    async def disconnected() -> None:
        log.warning("nats disconnected", extra={"action": "nats_disconnected"})

    async def error(err: Exception) -> None:
        # A permissions violation comes only here (the request it refused just times out).
        log.warning(
            "nats error", extra={"action": "nats_error", "user": login.user, "error": str(err)}
        )

    options: dict[str, object] = {}
    if login.user is not None:
        options["user"] = login.user
        options["password"] = login.password.get_secret_value() if login.password else ""
    if login.tls_ca_file is not None:
        options["tls"] = ssl.create_default_context(cafile=str(login.tls_ca_file))
        # The name the certificate is checked against, also when the client reconnects to
        # a cluster member it learnt of by its IP address.
        options["tls_hostname"] = urlsplit(url).hostname
    client = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        connect_timeout=2,
        reconnected_cb=reconnected,
        disconnected_cb=disconnected,
        error_cb=error,
        inbox_prefix=login.inbox_prefix,
        **options,
    )
    jetstream = client.jetstream(timeout=5)
    if create_streams:
        await ensure_streams(jetstream, replicas=stream_replicas)
    return client, jetstream


async def ensure_streams(jetstream: JetStreamContext, replicas: int = 1) -> None:
    for stream in STREAMS:
        config = StreamConfig(
            name=stream.name,
            subjects=list(stream.subjects),
            retention=stream.retention,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=stream.max_age_seconds,
        )
        try:
            await jetstream.add_stream(config)
        except BadRequestError:
            await jetstream.update_stream(config)


async def publish(jetstream: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> bool:
    """Publish once; True if JetStream stored it now, False if it was a duplicate."""
    ack = await jetstream.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
    return not ack.duplicate


async def publish_until_stored(
    jetstream: JetStreamContext, subject: str, payload: bytes, msg_id: str, *, give_up: float
) -> bool:
    """Publish, retrying with backoff through a NATS outage of up to `give_up` seconds."""
    try:
        await retry(
            lambda: publish(jetstream, subject, payload, msg_id),
            on=Exception,
            first=0.1,
            cap=2.0,
            give_up_after=give_up,
        )
    except Exception as err:
        log.error(
            "publish failed",
            extra={"action": "publish_failed", "msg_id": msg_id, "error": repr(err)},
        )
        return False
    return True


async def pull_consumer(
    jetstream: JetStreamContext,
    consumer: Consumer,
    *,
    ack_wait_seconds: float,
    max_ack_pending: int = 10_000,
) -> JetStreamContext.PullSubscription:
    stream, durable = consumer.stream, consumer.durable
    config = ConsumerConfig(
        durable_name=durable,
        ack_wait=ack_wait_seconds,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
    )
    return await jetstream.pull_subscribe(
        stream.subjects[0], durable=durable, stream=stream.name, config=config
    )


# How long a fetch waits for more messages once the first one came. A pull request for a
# batch stays open until the batch is full or it expires: asked with the 1 s long-poll
# timeout, a batch that never fills (200 dial requests, 256 asked for) sat there up to 1 s.
BATCH_LINGER_SECONDS = 0.05


async def fetch(subscription: JetStreamContext.PullSubscription, batch: int) -> Sequence[Msg]:
    """Long-poll for a first message, then take up to `batch` in all, waiting at most
    BATCH_LINGER_SECONDS for more. An empty list after a quiet second, or after a pause
    while NATS is unreachable (the client reconnects by itself)."""
    first = await _fetch(subscription, 1, wait_seconds=1.0)
    if not first or batch <= 1:
        return first
    return [*first, *await _fetch(subscription, batch - 1, wait_seconds=BATCH_LINGER_SECONDS)]


async def _fetch(
    subscription: JetStreamContext.PullSubscription, batch: int, *, wait_seconds: float
) -> list[Msg]:
    try:
        return await subscription.fetch(batch=batch, timeout=wait_seconds)
    except (NatsTimeout, TimeoutError):
        return []
    except NatsError as err:
        log.warning("fetch failed", extra={"action": "fetch_retry", "error": repr(err)})
        await asyncio.sleep(0.5)
        return []


async def pull_consumer_when_ready(
    jetstream: JetStreamContext, consumer: Consumer, *, ack_wait_seconds: float
) -> JetStreamContext.PullSubscription:
    """pull_consumer, retried while NATS is unreachable or the stream does not exist yet
    (the dispatcher creates it)."""

    def not_ready(err: BaseException) -> None:
        log.warning("consumer not ready", extra={"action": "consumer_retry", "error": repr(err)})

    subscription: JetStreamContext.PullSubscription = await retry(
        lambda: pull_consumer(jetstream, consumer, ack_wait_seconds=ack_wait_seconds),
        on=(NatsError, TimeoutError),
        first=0.2,
        cap=5.0,
        on_failure=not_ready,
    )
    return subscription


async def close(client: NATS) -> None:
    """Flush and close. Not drain(): nats-py's drain can wait forever on a pull subscription,
    and every publish here was already acknowledged by JetStream."""
    try:
        await client.flush(timeout=2)
    except Exception as err:
        log.info("nats flush skipped", extra={"action": "close", "error": repr(err)})
    await client.close()


class Verdict(StrEnum):
    """What becomes of a consumed message."""

    ACK = "ack"  # done with: never delivered again
    NAK = "nak"  # not now: delivered again (after `delay`)
    TERM = "term"  # never applicable: never delivered again (logged by the caller)


async def settle(msg: Msg, verdict: Verdict, *, delay: float | None = None) -> None:
    """ack / nak / term a message; if NATS is unreachable the message is redelivered later,
    which every consumer here tolerates (they are idempotent)."""
    try:
        match verdict:
            case Verdict.ACK:
                await msg.ack()
            case Verdict.NAK:
                await msg.nak(delay=delay)
            case Verdict.TERM:
                await msg.term()
            case _:  # a closed set: a new verdict must be handled here, not dropped
                assert_never(verdict)
    except NatsError as err:
        log.warning("could not settle message", extra={"action": verdict, "error": repr(err)})
