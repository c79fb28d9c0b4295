"""Reading messages that carry a batch (DialRequests, CallEvents), and the lone messages of
the versions before the batches: a lone message reads as an empty batch, since its field 1
is a number where the batch has its repeated field."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg

from services.common import bus

log = logging.getLogger(__name__)

Item = TypeVar("Item", bound=Message)


class PoisonMessage(Exception):
    """A message with nothing in it that can ever be used."""


def read_batch(
    data: bytes,
    batch: type[Message],
    field: str,
    item: type[Item],
    complete: Callable[[Item], bool],
) -> tuple[list[Item], int]:
    """The complete items of a message, in order, and how many were incomplete."""
    try:
        items: list[Item] = list(getattr(batch.FromString(data), field))
        if not items:
            items = [item.FromString(data)]
    except DecodeError as err:
        raise PoisonMessage(f"not a {batch.DESCRIPTOR.name}: {err}") from None
    usable = [one for one in items if complete(one)]
    if not usable:
        raise PoisonMessage(f"nothing complete in {len(items)} {item.DESCRIPTOR.name}")
    return usable, len(items) - len(usable)


async def read_or_term(
    msg: Msg, read: Callable[[bytes], tuple[list[Item], int]], what: str
) -> list[Item] | None:
    """The usable items of a message; None once a message with none is terminated (logged,
    never redelivered). Incomplete items are logged and left out."""
    try:
        items, incomplete = read(msg.data)
    except PoisonMessage as err:
        log.error(f"poison {what}", extra={"action": "term", "error": str(err)})
        await bus.settle(msg, bus.Verdict.TERM)
        return None
    if incomplete:
        log.error(
            f"incomplete {what} left out", extra={"action": "skip_incomplete", "count": incomplete}
        )
    return items
