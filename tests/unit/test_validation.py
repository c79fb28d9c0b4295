"""Pure unit tests of the input rules (services/api/validation.py) and the time format."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from services.api import validation
from services.common.errors import InvalidInput
from services.common.timefmt import format_utc, parse_utc

TASK: dict[str, Any] = {"a_number": "+79990001122", "b_number": "101"}


def violations(error: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [v.field for v in error.value.violations]


def one_task(**fields: Any) -> validation.NewTask:
    return validation.new_tasks([TASK | fields])[0]


def bad_task_fields(**fields: Any) -> list[str]:
    """The fields named when a task with these values is refused."""
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([TASK | fields])
    return violations(error)


# --- queues ------------------------------------------------------------------------------------


def test_new_queue_defaults() -> None:
    queue = validation.new_queue({})

    assert (queue.name, queue.comment, queue.status, queue.concurrent_task_limit) == (
        "",
        "",
        "off",
        1,
    )


def test_new_queue_keeps_given_values() -> None:
    queue = validation.new_queue(
        {"name": "n", "comment": "c", "status": "on", "concurrent_task_limit": 10_000}
    )

    assert queue.model_dump() == {
        "name": "n",
        "comment": "c",
        "status": "on",
        "concurrent_task_limit": 10_000,
        "interval_id": 0,
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "x" * 256}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"comment": "x" * 4001}, "comment"),
        ({"comment": "bell\x07"}, "comment"),
        ({"status": "ON"}, "status"),
        ({"status": ""}, "status"),
        ({"concurrent_task_limit": 0}, "concurrent_task_limit"),
        ({"concurrent_task_limit": 10_001}, "concurrent_task_limit"),
        ({"concurrent_task_limit": True}, "concurrent_task_limit"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_new_queue_refuses(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_queue(data)

    assert violations(error) == [field]


def test_new_queue_reports_every_bad_field() -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_queue({"status": "x", "concurrent_task_limit": 0})

    assert sorted(violations(error)) == ["concurrent_task_limit", "status"]
    assert "status" in error.value.message and "concurrent_task_limit" in error.value.message


def test_names_and_comments_may_hold_tabs_and_newlines() -> None:
    queue = validation.new_queue({"name": "a\tb", "comment": "line 1\r\nline 2"})

    assert queue.comment == "line 1\r\nline 2"


def test_queue_changes_leave_out_what_was_not_sent() -> None:
    assert validation.queue_changes({}).model_dump(exclude_none=True) == {}
    assert validation.queue_changes({"status": "on"}).model_dump(exclude_none=True) == {
        "status": "on"
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "renamed"}, "name"),
        ({"status": "maybe"}, "status"),
        ({"concurrent_task_limit": 0}, "concurrent_task_limit"),
        ({"comment": "x" * 4001}, "comment"),
    ],
)
def test_queue_changes_refuse(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.queue_changes(data)

    assert violations(error) == [field]


# --- paging ------------------------------------------------------------------------------------


def test_page_zeros_mean_the_default_page() -> None:
    page = validation.page({"after_id": 0, "limit": 0})

    assert (page.after_id, page.limit) == (0, validation.MAX_PAGE)


def test_page_keeps_given_values() -> None:
    page = validation.page({"after_id": 7, "limit": 25})

    assert (page.after_id, page.limit) == (7, 25)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"limit": 1001}, "limit"), ({"limit": -1}, "limit"), ({"after_id": -1}, "after_id")],
)
def test_page_refuses(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.page(data)

    assert violations(error) == [field]


@pytest.mark.parametrize(
    "status",
    ["scheduled", "executed", "delayed", "finished", "delayed_interval", "delayed_concurrent_task"],
)
def test_task_filter_accepts_each_status(status: str) -> None:
    assert validation.task_filter(status).status == status


def test_task_filter_empty_means_no_filter() -> None:
    assert validation.task_filter("").status is None


@pytest.mark.parametrize("status", ["bad", "Scheduled", "on"])
def test_task_filter_refuses(status: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.task_filter(status)

    assert violations(error) == ["status"]


# --- tasks: defaults and bulk ------------------------------------------------------------------


def test_new_task_defaults() -> None:
    task = one_task()

    assert task.name == ""
    assert task.extension_id == 0
    assert task.try_count == 1
    assert task.try_again_pause == 60
    assert (task.url_before, task.url_before_again, task.url_success, task.url_after) == (
        "",
        "",
        "",
        "",
    )
    assert task.start_time_utc is None
    assert task.callback_params.model_dump() == {
        "caller_id_name": "",
        "caller_id_number": "",
        "extended_a_numbers": [],
        "call_duration": 0,
        "ring_timeout": 0,
        "timezone": "",
    }


@pytest.mark.parametrize("count", [0, validation.MAX_TASKS_PER_REQUEST + 1])
def test_bulk_size_out_of_range(count: int) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([TASK] * count)

    assert violations(error) == ["tasks"]


@pytest.mark.parametrize("count", [1, validation.MAX_TASKS_PER_REQUEST])
def test_bulk_size_in_range(count: int) -> None:
    assert len(validation.new_tasks([TASK] * count)) == count


def test_bulk_keeps_input_order() -> None:
    tasks = validation.new_tasks([TASK | {"name": str(i)} for i in range(5)])

    assert [t.name for t in tasks] == ["0", "1", "2", "3", "4"]


def test_bulk_reports_every_bad_field_with_its_index() -> None:
    items: list[Mapping[str, Any]] = [
        TASK,
        TASK | {"a_number": "x", "try_count": 0},
        TASK,
        {"b_number": "1"},
    ]

    with pytest.raises(InvalidInput) as error:
        validation.new_tasks(items)

    assert violations(error) == ["tasks[1].a_number", "tasks[1].try_count", "tasks[3].a_number"]
    assert "tasks[1].a_number" in error.value.message


def test_bulk_message_summarises_many_violations() -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([{}] * 4)

    assert len(error.value.violations) == 8
    assert "(and 3 more)" in error.value.message


def test_nested_fields_are_named_by_path() -> None:
    params = {"extended_a_numbers": ["1", "abc"], "caller_id_number": "x"}

    assert sorted(bad_task_fields(callback_params=params)) == [
        "tasks[0].callback_params.caller_id_number",
        "tasks[0].callback_params.extended_a_numbers[1]",
    ]


# --- tasks: phone numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["1", "101", "+79990001122", "*21#", "#", "*", "+*5", "1" * 32, "+" + "1" * 31]
)
def test_phone_numbers_accepted(number: str) -> None:
    task = one_task(a_number=number, b_number=number)

    assert (task.a_number, task.b_number) == (number, number)


@pytest.mark.parametrize(
    "number",
    ["", "+", "++1", "1+2", "12a", "abc", " 1", "1 ", "1 2", "1-2", "(495)1", "1" * 33, "١٢٣"],
)
@pytest.mark.parametrize("field", ["a_number", "b_number"])
def test_phone_numbers_refused(field: str, number: str) -> None:
    assert bad_task_fields(**{field: number}) == [f"tasks[0].{field}"]


@pytest.mark.parametrize("field", ["a_number", "b_number"])
def test_phone_numbers_required(field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([{k: v for k, v in TASK.items() if k != field}])

    assert violations(error) == [f"tasks[0].{field}"]


# --- tasks: numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (-1, False)])
def test_extension_id_range(value: int, ok: bool) -> None:
    if ok:
        assert one_task(extension_id=value).extension_id == value
    else:
        assert bad_task_fields(extension_id=value) == ["tasks[0].extension_id"]


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (50, True), (51, False)])
def test_try_count_range(value: int, ok: bool) -> None:
    if ok:
        assert one_task(try_count=value).try_count == value
    else:
        assert bad_task_fields(try_count=value) == ["tasks[0].try_count"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        ("0", 0),
        (30, 30),
        ("30", 30),
        (" 30 ", 30),
        (30.0, 30),
        (None, 60),
        (validation.MAX_TRY_AGAIN_PAUSE, validation.MAX_TRY_AGAIN_PAUSE),
    ],
)
def test_try_again_pause_accepted(value: Any, seconds: int) -> None:
    assert one_task(try_again_pause=value).try_again_pause == seconds


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-1",
        "abc",
        "",
        1.5,
        "1.5",
        "1e3",
        True,
        False,
        float("nan"),
        float("inf"),
        [],
        {},
        "²",
        validation.MAX_TRY_AGAIN_PAUSE + 1,
    ],
)
def test_try_again_pause_refused(value: Any) -> None:
    assert bad_task_fields(try_again_pause=value) == ["tasks[0].try_again_pause"]


# --- tasks: retries of the A leg ---------------------------------------------------------------


def test_a_leg_retries_are_off_when_absent() -> None:
    task = one_task()
    assert (task.try_count_caller, task.try_again_pause_caller) == (0, 0)


@pytest.mark.parametrize(
    ("value", "ok"), [(0, True), (1, True), (50, True), (51, False), (-1, False)]
)
def test_try_count_caller_range(value: int, ok: bool) -> None:
    if ok:
        assert one_task(try_count_caller=value).try_count_caller == value
    else:
        assert bad_task_fields(try_count_caller=value) == ["tasks[0].try_count_caller"]


@pytest.mark.parametrize(
    ("value", "ok"), [(0, True), (1, True), (864_000, True), (864_001, False), (-1, False)]
)
def test_try_again_pause_caller_range(value: int, ok: bool) -> None:
    if ok:
        assert one_task(try_again_pause_caller=value).try_again_pause_caller == value
    else:
        assert bad_task_fields(try_again_pause_caller=value) == ["tasks[0].try_again_pause_caller"]


@pytest.mark.parametrize("value", ["3", 2.5, True, None, [3]])
@pytest.mark.parametrize("field", ["try_count_caller", "try_again_pause_caller"])
def test_a_leg_fields_are_whole_numbers(field: str, value: Any) -> None:
    """Through REST the transcoder turns JSON into int32 first; the model is strict so that
    nothing else reaching it (another edge, a test) is coerced silently."""
    assert bad_task_fields(**{field: value}) == [f"tasks[0].{field}"]


# --- tasks: URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com",
        "https://example.com/hook?a=1&b=two",
        "http://127.0.0.1:8080/x",
        "https://Example.COM",  # kept exactly as sent, not normalised
        "https://example.com/" + "a" * 2000,
    ],
)
@pytest.mark.parametrize("field", ["url_before", "url_before_again", "url_success", "url_after"])
def test_urls_accepted_and_kept_as_sent(field: str, url: str) -> None:
    assert getattr(one_task(**{field: url}), field) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "mailto:ops@example.com",
        "not a url",
        "/relative/path",
        "example.com/path",
        "http://",
        "https://example.com/" + "a" * 2048,
    ],
)
@pytest.mark.parametrize("field", ["url_before", "url_before_again", "url_success", "url_after"])
def test_urls_refused(field: str, url: str) -> None:
    assert bad_task_fields(**{field: url}) == [f"tasks[0].{field}"]


# --- tasks: start time and callback params -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2030-01-02 03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02 03:04", datetime(2030, 1, 2, 3, 4, tzinfo=UTC)),
        ("2020-01-01 00:00:00", datetime(2020, 1, 1, tzinfo=UTC)),
    ],
)
def test_start_time_accepted(text: str, moment: datetime) -> None:
    assert one_task(start_time_utc=text).start_time_utc == moment


@pytest.mark.parametrize(
    "text",
    ["2026-02-30 00:00:00", "tomorrow", "2030-01-02T03:04:05Z", "2030-01-02", "", "03:04:05"],
)
def test_start_time_refused(text: str) -> None:
    assert bad_task_fields(start_time_utc=text) == ["tasks[0].start_time_utc"]


@pytest.mark.parametrize("value", [5, ["2030-01-02 03:04:05"]])
def test_start_time_of_the_wrong_type_is_invalid_input_not_a_crash(value: Any) -> None:
    assert bad_task_fields(start_time_utc=value) == ["tasks[0].start_time_utc"]


def test_start_time_none_means_as_soon_as_possible() -> None:
    assert one_task(start_time_utc=None).start_time_utc is None


def test_callback_params_accepted() -> None:
    params = {
        "caller_id_name": "Shop",
        "caller_id_number": "+1555",
        "extended_a_numbers": ["1"] * validation.MAX_EXTENDED_A_NUMBERS,
        "call_duration": validation.MAX_CALL_DURATION,
        "ring_timeout": validation.MAX_RING_TIMEOUT,
        "timezone": "America/Chicago",
    }

    assert one_task(callback_params=params).callback_params.model_dump() == params


@pytest.mark.parametrize(
    ("call_duration", "ring_timeout"),
    [(0, 0), (1, validation.MIN_RING_TIMEOUT), (validation.MAX_CALL_DURATION, 30)],
)
def test_call_limits_accepted(call_duration: int, ring_timeout: int) -> None:
    params = {"call_duration": call_duration, "ring_timeout": ring_timeout}
    task = one_task(callback_params=params)
    assert (task.callback_params.call_duration, task.callback_params.ring_timeout) == (
        call_duration,
        ring_timeout,
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"call_duration": validation.MAX_CALL_DURATION + 1}, "less than or equal to 3600"),
        ({"call_duration": -1}, "greater than or equal to 0"),
        ({"call_duration": "60"}, "valid integer"),
        ({"ring_timeout": validation.MIN_RING_TIMEOUT - 1}, "from 5 to 60"),
        ({"ring_timeout": validation.MAX_RING_TIMEOUT + 1}, "from 5 to 60"),
        ({"ring_timeout": -5}, "from 5 to 60"),
        ({"ring_timeout": 1.5}, "valid integer"),
        ({"timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"timezone": "x" * 65}, "at most 64"),
    ],
)
def test_call_limits_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([TASK | {"callback_params": params}])
    [violation] = error.value.violations
    assert violation.field == f"tasks[0].callback_params.{next(iter(params))}"
    assert message in violation.description


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"caller_id_number": "abc"}, "caller_id_number"),
        ({"caller_id_number": "1" * 33}, "caller_id_number"),
        ({"caller_id_name": "x" * 65}, "caller_id_name"),
        ({"caller_id_name": "a\x00"}, "caller_id_name"),
        ({"extended_a_numbers": ["1"] * 21}, "extended_a_numbers"),
        ({"extended_a_numbers": [""]}, "extended_a_numbers[0]"),
        ({"unknown": "x"}, "unknown"),
    ],
)
def test_callback_params_refused(params: dict[str, Any], field: str) -> None:
    assert bad_task_fields(callback_params=params) == [f"tasks[0].callback_params.{field}"]


@pytest.mark.parametrize(
    "name",
    [
        'Zoë "Sales" \\ <Nord>; Ltd, #1 & co.',
        "日本語 Сервис",
        "e\u0301",  # a combining mark
        "a\u00a0b\u3000c",  # no-break and ideographic spaces
        "x" * 64,
        "☎ €",
    ],
)
def test_caller_id_name_takes_letters_marks_digits_punctuation_symbols_and_spaces(
    name: str,
) -> None:
    assert one_task(callback_params={"caller_id_name": name}).callback_params.caller_id_name == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ('x"\r\nP-Charge-Info: <sip:+15550001111@t>\r\nX: "', "character 3 (U+000D) is a control"),
        ("a\tb", "character 2 (U+0009) is a control character"),
        ("a\nb", "(U+000A) is a control character"),
        ("\x00", "(U+0000) is a control character"),
        ("a\x7f", "(U+007F) is a control character"),
        ("a\x85", "(U+0085) is a control character"),
        ("a\u2028b", "(U+2028) is a line separator"),
        ("a\u2029b", "(U+2029) is a paragraph separator"),
        ("a\u200bb", "(U+200B) is a format character"),
        ("a\u202eb", "(U+202E) is a format character"),
        ("\ufeffa", "(U+FEFF) is a format character"),
        ("a\ue000", "(U+E000) is a private-use character"),
        ("a\u0378", "(U+0378) is an unassigned code point"),
    ],
)
def test_caller_id_name_refuses_control_and_format_characters(name: str, why: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validation.new_tasks([TASK | {"callback_params": {"caller_id_name": name}}])

    [violation] = error.value.violations
    assert violation.field == "tasks[0].callback_params.caller_id_name"
    assert violation.description.startswith("must be letters, digits, punctuation, symbols")
    assert why in violation.description


def test_names_and_comments_still_take_tabs_and_line_breaks() -> None:
    # Only the caller id name reaches SIP headers; queue and task names and comments keep
    # the older, looser rule.
    assert one_task(name="a\tb\r\nc").name == "a\tb\r\nc"


def test_call_uuid_is_canonical() -> None:
    text = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

    assert validation.call_uuid(text) == text.lower()
    with pytest.raises(InvalidInput) as error:
        validation.call_uuid("not-a-uuid")
    assert violations(error) == ["call_uuid"]


# --- timefmt -----------------------------------------------------------------------------------


def test_format_utc_renders_the_wire_format() -> None:
    assert format_utc(datetime(2030, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)) == "2030-01-02 03:04:05"


def test_format_utc_converts_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))

    assert format_utc(datetime(2030, 1, 1, 1, 0, tzinfo=moscow)) == "2029-12-31 22:00:00"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01 00:00:00"),
        (datetime(999, 12, 31, 23, 59, tzinfo=UTC), "0999-12-31 23:59:00"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "9999-12-31 23:59:59"),
    ],
)
def test_format_utc_always_has_four_digit_years(moment: datetime, text: str) -> None:
    assert format_utc(moment) == text


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2030-01-02 03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2030-01-02 03:04", datetime(2030, 1, 2, 3, 4, tzinfo=UTC)),
        (" 2030-01-02 03:04:05 ", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-02-29 00:00:00", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_parse_utc(text: str, moment: datetime) -> None:
    parsed = parse_utc(text)

    assert parsed == moment
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["", "tomorrow", "2026-02-30 00:00:00", "2023-02-29 00:00:00", "2030-01-02 24:00:00",
     "2030-01-02T03:04:05", "2030-01-02 03:04:05Z", "2030-01-02 03:04:05.5", "2030-01-02"],
)  # fmt: skip
def test_parse_utc_refuses_with_a_readable_message(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
        parse_utc(text)


def test_parse_and_format_round_trip() -> None:
    for text in ("2030-01-02 03:04:05", "1970-01-01 00:00:00", "2099-12-31 23:59:59"):
        assert format_utc(parse_utc(text)) == text
