"""The rules of a reschedule (PUT of a task): what may change, when, and into what."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.api import policy, validation
from services.common.errors import Conflict, InvalidInput, PolicyViolation

STORED = {
    "name": "n",
    "a_number": "+100",
    "b_number": "200",
    "extension_id": 0,
    "try_count": 2,
    "try_again_pause": 60,
    "try_count_caller": 0,
    "try_again_pause_caller": 0,
    "url_before": "",
    "url_before_again": "",
    "url_success": "",
    "url_after": "https://example.com/a",
    "start_time_utc": datetime(2030, 1, 1, tzinfo=UTC),
    "callback_params": {"caller_id_name": "X", "caller_id_number": "", "extended_a_numbers": []},
}


def test_changes_are_partial_and_validated() -> None:
    changes = validation.task_changes(
        {"try_again_pause": "30", "start_time_utc": "2031-02-03 04:05"}
    )
    assert changes.model_fields_set == {"try_again_pause", "start_time_utc"}
    assert changes.try_again_pause == 30
    assert changes.start_time_utc == datetime(2031, 2, 3, 4, 5, tzinfo=UTC)
    assert changes.try_count is None
    with pytest.raises(InvalidInput) as refused:
        validation.task_changes({"try_count": 0, "url_after": "ftp://x"})
    assert {v.field for v in refused.value.violations} == {"try_count", "url_after"}


def test_the_rescheduled_task_keeps_what_was_not_changed() -> None:
    task = validation.stored_task(STORED)
    changes = validation.task_changes({"try_count": 4, "callback_params": {"caller_id_name": "Y"}})
    after = validation.rescheduled(task, changes)
    assert (after.try_count, after.url_after, after.a_number) == (
        4,
        "https://example.com/a",
        "+100",
    )
    assert after.callback_params.caller_id_name == "Y"
    assert task.try_count == 2  # values are immutable: a new task, not a changed one


@pytest.mark.parametrize("status", ["executed", "finished"])
def test_only_a_waiting_task_can_change(status: str) -> None:
    with pytest.raises(Conflict) as refused:
        validation.check_reschedulable(7, status, 1, validation.task_changes({}), caller_failures=0)
    assert status in refused.value.message and "7" in refused.value.message
    for waiting in ("scheduled", "delayed"):
        validation.check_reschedulable(
            7, waiting, 0, validation.task_changes({}), caller_failures=0
        )


def reschedule(attempts: int, caller_failures: int, **fields: object) -> None:
    changes = validation.task_changes(fields)
    validation.check_reschedulable(7, "delayed", attempts, changes, caller_failures=caller_failures)


def test_try_count_must_leave_an_attempt_to_make() -> None:
    with pytest.raises(InvalidInput):
        reschedule(2, 0, try_count=2)
    reschedule(2, 0, try_count=3)


@pytest.mark.parametrize("limit", [0, 3, 50])
def test_try_count_caller_may_be_off_or_leave_a_try_of_a(limit: int) -> None:
    reschedule(3, 2, try_count_caller=limit)


@pytest.mark.parametrize("limit", [1, 2])
def test_try_count_caller_must_exceed_the_a_leg_failures_so_far(limit: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        reschedule(3, 2, try_count_caller=limit)
    [violation] = refused.value.violations
    assert violation.field == "try_count_caller"
    assert "2 attempt(s) that already failed at the A leg (at least 3)" in violation.description


def test_both_counters_refused_are_both_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        reschedule(3, 2, try_count=3, try_count_caller=2)
    assert [v.field for v in refused.value.violations] == ["try_count", "try_count_caller"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"try_count_caller": -1}, "try_count_caller"),
        ({"try_count_caller": 51}, "try_count_caller"),
        ({"try_again_pause_caller": -1}, "try_again_pause_caller"),
        ({"try_again_pause_caller": 864_001}, "try_again_pause_caller"),
    ],
)
def test_a_leg_changes_out_of_bounds_are_refused(fields: dict[str, int], named: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validation.task_changes(fields)
    assert [v.field for v in refused.value.violations] == [named]


def test_a_leg_changes_are_kept_and_applied() -> None:
    changes = validation.task_changes({"try_count_caller": 4, "try_again_pause_caller": 0})
    assert changes.model_fields_set == {"try_count_caller", "try_again_pause_caller"}
    after = validation.rescheduled(validation.stored_task(STORED), changes)
    assert (after.try_count_caller, after.try_again_pause_caller) == (4, 0)


def test_policy_of_one_task_names_fields_without_an_index() -> None:
    task = validation.rescheduled(
        validation.stored_task(STORED),
        validation.task_changes({"callback_params": {"caller_id_number": "+1555"}}),
    )
    tenant = policy.TenantPolicy(frozenset(), frozenset(), ())
    with pytest.raises(PolicyViolation) as refused:
        policy.check_task(task, tenant, ())
    assert refused.value.reason == policy.CALLER_ID_NOT_ALLOWED
    assert refused.value.violations[0].field == "callback_params.caller_id_number"
