"""The shared words (services/common/vocabulary.py) against the proto enums and the schema."""

from __future__ import annotations

from typing import get_args

from scheduler.v1 import events_pb2

from services.api import validation
from services.common.models import FINISH_RESULTS, TASK_STATUSES
from services.common.vocabulary import (
    OUTCOME_FROM_PROTO,
    OUTCOME_TO_PROTO,
    STORED,
    CallOutcome,
    TaskStatus,
    WebhookEvent,
)
from services.dispatcher.lifecycle import OUTCOME_COMMENTS


def test_every_reported_outcome_has_exactly_one_proto_value_and_back() -> None:
    proto_values = set(events_pb2.CallOutcome.values()) - {events_pb2.CALL_OUTCOME_UNSPECIFIED}
    reported = set(CallOutcome) - {CallOutcome.LOST}  # decided by the dispatcher, never sent
    assert set(OUTCOME_TO_PROTO) == reported
    assert set(OUTCOME_TO_PROTO.values()) == proto_values
    assert len(OUTCOME_TO_PROTO) == len(proto_values)
    assert {proto: outcome for outcome, proto in OUTCOME_TO_PROTO.items()} == dict(
        OUTCOME_FROM_PROTO
    )


def test_outcome_names_follow_the_proto_names() -> None:
    for outcome, proto in OUTCOME_TO_PROTO.items():
        assert events_pb2.CallOutcome.Name(proto) == f"CALL_OUTCOME_{outcome.upper()}"


def test_every_outcome_has_a_comment() -> None:
    assert set(OUTCOME_COMMENTS) == set(CallOutcome)


def test_the_schema_checks_the_same_words() -> None:
    # The migration 0018 CHECK spells them in this order.
    assert TASK_STATUSES == ("scheduled", "executed", "delayed", "finished", "delayed_interval")
    assert TASK_STATUSES == tuple(STORED)
    assert set(TaskStatus) - set(STORED) == {TaskStatus.DELAYED_CONCURRENT_TASK}
    assert FINISH_RESULTS == ("", "success", "failed")


def test_webhook_events_ranked_in_the_order_they_are_delivered() -> None:
    order = [WebhookEvent.BEFORE, WebhookEvent.SUCCESS, WebhookEvent.AFTER]
    assert [event.rank for event in order] == sorted(event.rank for event in order)
    assert len({event.rank for event in order}) == len(order)
    assert WebhookEvent.BEFORE_AGAIN.rank == WebhookEvent.BEFORE.rank
    assert [event.url_field for event in WebhookEvent] == [
        "url_before",
        "url_before_again",
        "url_success",
        "url_after",
    ]


def test_the_list_filter_takes_every_status_and_only_those() -> None:
    assert set(get_args(validation.TaskStatus)) == {status.value for status in TaskStatus}
