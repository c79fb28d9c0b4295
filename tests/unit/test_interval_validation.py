"""What a client may send as an interval (calling window), field by field."""

from __future__ import annotations

from typing import Any

import pytest

from services.api import validation
from services.common.errors import InvalidInput


def refused(data: dict[str, Any], changes: bool = False) -> dict[str, str]:
    with pytest.raises(InvalidInput) as err:
        (validation.interval_changes if changes else validation.new_interval)(data)
    return {v.field: v.description for v in err.value.violations}


def test_a_full_interval_is_kept_in_canonical_form() -> None:
    interval = validation.new_interval(
        {
            "name": "office",
            "timezone": "Europe/Berlin",
            "conditions": [
                {"start_time": "09:00:00", "end_time": "18:00:00", "start_dow": 2, "end_dow": 6},
                {"start_time": "22:00:00", "end_time": "06:00:00", "start_dow": 6, "end_dow": 2},
                {"end_time": "24:00:00", "start_mday": 25, "end_mday": 5, "month": 12},
                {"start_datetime": "2030-12-24 09:00", "end_datetime": "2030-12-24 12:00:00"},
            ],
        }
    )
    assert interval.conditions[3].start_datetime == "2030-12-24 09:00:00"
    assert interval.conditions[0].model_dump() == {
        "start_time": "09:00:00",
        "end_time": "18:00:00",
        "start_dow": 2,
        "end_dow": 6,
        "start_mday": 0,
        "end_mday": 0,
        "month": 0,
        "start_datetime": "",
        "end_datetime": "",
    }


def test_timezone_is_required_and_must_be_iana() -> None:
    assert "timezone" in refused({"conditions": [{}]})
    for bad in ("Mars/Base", "europe/berlin", "", "../../etc/passwd", "x" * 65):
        assert "timezone" in refused({"timezone": bad, "conditions": [{}]}), bad


def test_conditions_are_bounded() -> None:
    assert "conditions" in refused({"timezone": "UTC", "conditions": []})
    too_many: list[dict[str, Any]] = [{}] * (validation.MAX_CONDITIONS + 1)
    assert "conditions" in refused({"timezone": "UTC", "conditions": too_many})
    assert len(validation.new_interval({"timezone": "UTC", "conditions": [{}] * 50}).conditions)
    assert "name" in refused({"name": "n" * 256, "timezone": "UTC", "conditions": [{}]})


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        ({"start_time": "9:00"}, "conditions[0].start_time"),
        ({"start_time": "24:00:00"}, "conditions[0].start_time"),
        ({"end_time": "25:00:00"}, "conditions[0].end_time"),
        ({"end_time": "12:60:00"}, "conditions[0].end_time"),
        ({"start_dow": 8}, "conditions[0].start_dow"),
        ({"end_dow": -1}, "conditions[0].end_dow"),
        ({"start_mday": 32}, "conditions[0].start_mday"),
        ({"month": 13}, "conditions[0].month"),
        ({"start_datetime": "2030-02-30 00:00:00"}, "conditions[0].start_datetime"),
        ({"end_datetime": "1969-12-31 23:59:59"}, "conditions[0].end_datetime"),
        ({"start_time": "10:00:00", "end_time": "10:00:00"}, "conditions[0]"),
        (
            {"start_datetime": "2030-01-02 00:00:00", "end_datetime": "2030-01-01 00:00:00"},
            "conditions[0]",
        ),
    ],
)
def test_bad_conditions_name_the_field(condition: dict[str, Any], field: str) -> None:
    assert field in refused({"timezone": "UTC", "conditions": [condition]})


def test_changes_are_partial() -> None:
    changes = validation.interval_changes({"timezone": "Asia/Tokyo"})
    assert changes.model_dump(exclude_none=True) == {"timezone": "Asia/Tokyo"}
    assert "timezone" in refused({"timezone": "Nowhere"}, changes=True)


def test_a_queue_names_an_interval_by_a_non_negative_id() -> None:
    assert validation.new_queue({"interval_id": 7}).interval_id == 7
    assert validation.queue_changes({"interval_id": 0}).interval_id == 0
    assert validation.queue_changes({}).interval_id is None
