"""The dialer holds requests that came before their due time (the dispatcher's lookahead),
and reads dial requests in batches as well as alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from scheduler.v1 import events_pb2

from services.common.batch_messages import PoisonMessage
from services.dialer.consumer import Dialer, _by_due_time, parse

NOW_MS = 1_800_000_000_000.0


def request(task_id: int, due_ms: int = 0, **fields: object) -> events_pb2.DialRequest:
    values: dict[str, object] = {
        "task_id": task_id,
        "attempt": 1,
        "call_uuid": f"uuid-{task_id}",
        "a_number": "+1555",
        "due_at_unix_ms": due_ms,
    }
    return events_pb2.DialRequest(**(values | fields))  # type: ignore[arg-type]


def test_due_and_overdue_go_now_later_ones_wait_by_due_time_earliest_first() -> None:
    requests = [
        request(5, int(NOW_MS) + 1_000),
        request(1, int(NOW_MS) - 5_000),  # overdue
        request(2, int(NOW_MS) + 200),
        request(3, 0),  # no due time: now
        request(4, int(NOW_MS) + 200),
    ]

    groups = _by_due_time(requests, NOW_MS)

    assert [(due, [r.task_id for r in group]) for due, group in groups] == [
        (NOW_MS, [1, 3]),
        (NOW_MS + 200, [2, 4]),
        (NOW_MS + 1_000, [5]),
    ]


def test_a_batch_is_read_in_order_and_its_incomplete_requests_are_counted() -> None:
    batch = events_pb2.DialRequests(
        requests=[request(1), request(2, a_number=""), request(3), request(4, call_uuid="")]
    )

    requests, incomplete = parse(batch.SerializeToString())

    assert [r.task_id for r in requests] == [1, 3]
    assert incomplete == 2


def test_a_lone_request_from_an_older_dispatcher_is_read() -> None:
    lone = request(7, int(NOW_MS), b_number="+1666", extended_a_numbers=["+1777"])

    requests, incomplete = parse(lone.SerializeToString())

    assert requests == [lone]
    assert incomplete == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff not protobuf",
        b"",
        request(0).SerializeToString(),
        events_pb2.DialRequests(requests=[request(1, a_number="")]).SerializeToString(),
    ],
    ids=["garbage", "empty", "lone incomplete", "batch of incomplete"],
)
def test_a_message_with_nothing_to_dial_is_poison(data: bytes) -> None:
    with pytest.raises(PoisonMessage):
        parse(data)


class FakeMsg:
    def __init__(self) -> None:
        self.verdicts: list[str] = []

    async def ack(self) -> None:
        self.verdicts.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.verdicts.append("nak")

    async def term(self) -> None:
        self.verdicts.append("term")


async def test_requests_not_started_for_want_of_the_database_free_their_room() -> None:
    settings: Any = SimpleNamespace(report_retry_seconds=1.0, max_concurrent_calls=2)
    # The calls are built while they are recorded; not recorded, they are forgotten.
    built: set[str] = set()
    backend = SimpleNamespace(prepare_call=lambda plan: built.add(plan.call_uuid))
    backend.forget_call = built.discard
    backend.reserve_start = lambda at: at
    dialer = Dialer(cast(Any, None), cast(Any, None), cast(Any, backend), settings)

    async def database_down(requests: Any, hold: float, now: Any = None) -> None:
        return None

    dialer._record_calls = database_down  # type: ignore[method-assign]
    msg = FakeMsg()
    dialer._held_count = 2  # as _take counts them: the dialer is full
    dialer._slot_free.clear()

    await dialer._dial_when_due(cast(Any, msg), [request(1), request(2)])

    assert msg.verdicts == ["nak"]  # redelivered, to this dialer or another
    assert dialer._held_count == 0
    assert dialer._slot_free.is_set()  # the fetch loop, waiting for room, goes on
    assert not built
