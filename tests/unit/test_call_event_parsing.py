"""The dispatcher reads call events in batches (CallEvents) and alone (older dialers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from scheduler.v1 import events_pb2

from services.common.batch_messages import PoisonMessage
from services.common.vocabulary import CallOutcome
from services.dispatcher.consumer import _event, parse
from services.dispatcher.transitions import Ended

ENDED = events_pb2.CallEvent.KIND_ENDED
CONNECTED = events_pb2.CallEvent.KIND_CONNECTED


def event(task_id: int, kind: int = ENDED, **fields: object) -> events_pb2.CallEvent:
    values: dict[str, object] = {
        "kind": kind,
        "task_id": task_id,
        "attempt": 1,
        "call_uuid": f"uuid-{task_id}",
        "outcome": events_pb2.CALL_OUTCOME_B_BUSY,
        "comment": "B was busy",
    }
    return events_pb2.CallEvent(**(values | fields))  # type: ignore[arg-type]


def test_a_batch_keeps_its_order_and_counts_incomplete_events() -> None:
    batch = events_pb2.CallEvents(
        events=[
            event(1, CONNECTED, outcome=0),
            event(1),
            event(2, outcome=99),  # unknown outcome
            event(3, attempt=0),
        ]
    )

    events, incomplete = parse(batch.SerializeToString())

    assert [(e.task_id, e.kind) for e in events] == [(1, CONNECTED), (1, ENDED)]
    assert incomplete == 2


def test_a_lone_event_from_an_older_dialer_is_read() -> None:
    lone = event(9)

    events, incomplete = parse(lone.SerializeToString())

    assert events == [lone]
    assert incomplete == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff not protobuf",
        b"",
        event(0).SerializeToString(),
        event(4, kind=0).SerializeToString(),
        events_pb2.CallEvents(events=[event(5, outcome=99)]).SerializeToString(),
    ],
    ids=["garbage", "empty", "task 0", "no kind", "batch of incomplete"],
)
def test_a_message_with_nothing_to_apply_is_poison(data: bytes) -> None:
    with pytest.raises(PoisonMessage):
        parse(data)


def test_an_outside_window_report_brings_the_closing_to_the_planner() -> None:
    closing = event(
        6,
        outcome=events_pb2.CALL_OUTCOME_OUTSIDE_WINDOW,
        comment="not dialed",
        window_closes_at_unix_ms=1_796_493_600_000,
    )
    assert _event(closing) == Ended(
        6,
        1,
        "uuid-6",
        CallOutcome.OUTSIDE_WINDOW,
        "not dialed",
        datetime(2026, 12, 5, 18, tzinfo=UTC),
    )
    assert _event(event(7)) == Ended(7, 1, "uuid-7", CallOutcome.B_BUSY, "B was busy", None)
