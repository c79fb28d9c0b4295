"""The rules for what a client may send: every field of the published spec, as DECISIONS.md says.

Input arrives as plain dicts (the servicer turns protobuf into them, leaving out what the
client omitted), so that omitted fields take their documented defaults here and nowhere else.
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.common import calling_windows, vocabulary
from services.common.errors import Conflict, FieldViolation, InvalidInput
from services.common.timefmt import parse_utc

MAX_TASKS_PER_REQUEST = 1000
MAX_PAGE = 1000
MAX_TRY_AGAIN_PAUSE = 30 * 24 * 3600
DEFAULT_TRY_AGAIN_PAUSE = 60
MAX_EXTENDED_A_NUMBERS = 20
MAX_CONCURRENT_TASK_LIMIT = 10_000
# Calling windows: bounds that keep one tenant from flooding the table or the dispatcher's
# evaluation (each condition is checked for every claim of a queue with an interval).
MAX_CONDITIONS = 50
MAX_INTERVALS_PER_CLIENT = 1000
MAX_TIMEZONE_LENGTH = 64
# Per-task call limits (callback_params), in seconds; 0 means the dialer's own. The upper
# bounds are the dialer's defaults (DIALER_RING_TIMEOUT_SECONDS, DIALER_MAX_CALL_SECONDS):
# the longest call must fit in the dispatcher's attempt lease, so a task may shorten a call,
# never lengthen it. Below 5 s a ring barely reaches a phone before it is cancelled.
MIN_RING_TIMEOUT = 5
MAX_RING_TIMEOUT = 60
MAX_CALL_DURATION = 3600
# Retries of the A leg (the vendor's newest revision): 0 = off.
MAX_TRY_COUNT = 50
MAX_TRY_AGAIN_PAUSE_CALLER = 864_000  # ten days, the vendor's bound

_PHONE = re.compile(r"\+?[0-9*#]+")
_URL = TypeAdapter(AnyHttpUrl)


def _phone(value: str) -> str:
    if not value or len(value) > 32 or not _PHONE.fullmatch(value):
        raise PydanticCustomError(
            "phone_number",
            "must be a phone number or extension: digits, '*' or '#', an optional leading '+', "
            "at most 32 characters",
        )
    return value


def _url(value: str) -> str:
    if value == "":
        return value
    try:
        parsed = _URL.validate_python(value)
    except ValidationError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise PydanticCustomError("url", "must be an absolute http:// or https:// URL")
    return value  # kept exactly as sent: receivers may sign or compare it


MIN_START_YEAR = 1970


def _start_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("utc_time", "must be a string YYYY-MM-DD HH:MM:SS (UTC)")
    try:
        moment = parse_utc(value)
    except ValueError as err:
        raise PydanticCustomError("utc_time", str(err)) from None
    if moment.year < MIN_START_YEAR:
        raise PydanticCustomError("utc_time", f"must be in {MIN_START_YEAR} or later")
    return moment


def _pause(value: Any) -> int:
    """try_again_pause: seconds as a JSON number or a string of digits."""
    if value is None:
        return DEFAULT_TRY_AGAIN_PAUSE
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = int(value) if math.isfinite(value) and value == int(value) else None
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    else:
        seconds = None
    if seconds is None or not 0 <= seconds <= MAX_TRY_AGAIN_PAUSE:
        raise PydanticCustomError(
            "seconds",
            f"must be a whole number of seconds from 0 to {MAX_TRY_AGAIN_PAUSE}, "
            "as a number or a string",
        )
    return seconds


# PostgreSQL text cannot hold NUL, and no name or comment needs control characters (tab and
# line breaks are fine). A regex, not a loop over the characters: it runs on every name of
# every task in a bulk add.
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _printable(value: str) -> str:
    if _CONTROL_CHARACTER.search(value):
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return value


# A caller id name goes into SIP headers (From, P-Asserted-Identity) and onto phone displays,
# so it is held to a stricter set than names and comments: letters, marks, digits,
# punctuation, symbols and spaces (Unicode categories L, M, N, P, S, Zs). No control characters
# (a CR or LF would end the SIP header: header injection), no format characters (invisible
# bidi overrides, zero-width joiners), no line or paragraph separators, nothing unassigned or
# private. The dialer escapes the name as a quoted-string as well (defence in depth).
_DISPLAY_CATEGORIES = frozenset(("L", "M", "N", "P", "S"))
_REFUSED_KIND = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
}


def _display_name(value: str) -> str:
    # isprintable() (in C) accepts exactly these categories, minus the spaces other than
    # U+0020: most names pass it at once; the rest (with a no-break space, say) are checked
    # one character at a time, at most 64.
    if value.isprintable():
        return value
    for index, char in enumerate(value, 1):
        category = unicodedata.category(char)
        if category[0] not in _DISPLAY_CATEGORIES and category != "Zs":
            raise PydanticCustomError(
                "display_name",
                "must be letters, digits, punctuation, symbols and spaces only: "
                "character {index} (U+{code}) is {kind}",
                {"index": index, "code": f"{ord(char):04X}", "kind": _REFUSED_KIND[category]},
            )
    return value


Phone = Annotated[str, AfterValidator(_phone)]
Url = Annotated[str, Field(max_length=2048), AfterValidator(_url)]
Pause = Annotated[int, BeforeValidator(_pause)]
QueueStatus = Literal["on", "off"]
# The statuses a list can be filtered by: vocabulary.TaskStatus's words, spelled out as a
# Literal because strict validation takes a str here, not the enum (tests/unit/test_vocabulary.py
# keeps the two equal).
TaskStatus = Literal[
    "scheduled",
    "executed",
    "delayed",
    "finished",
    "delayed_interval",
    "delayed_concurrent_task",
]
Name = Annotated[str, Field(max_length=255), AfterValidator(_printable)]
Comment = Annotated[str, Field(max_length=4000), AfterValidator(_printable)]
ConcurrencyLimit = Annotated[int, Field(ge=1, le=MAX_CONCURRENT_TASK_LIMIT)]
TryCount = Annotated[int, Field(ge=1, le=MAX_TRY_COUNT)]
TryCountCaller = Annotated[int, Field(ge=0, le=MAX_TRY_COUNT)]
PauseCaller = Annotated[int, Field(ge=0, le=MAX_TRY_AGAIN_PAUSE_CALLER)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


IntervalId = Annotated[int, Field(ge=0)]


class NewQueue(_Strict):
    name: Name = ""
    comment: Comment = ""
    status: QueueStatus = "off"
    concurrent_task_limit: ConcurrencyLimit = 1
    # 0: no calling window (always open).
    interval_id: IntervalId = 0


class QueueChanges(_Strict):
    """A partial update: None means "keep the current value"; interval_id 0 takes the
    queue's calling window away."""

    comment: Comment | None = None
    status: QueueStatus | None = None
    concurrent_task_limit: ConcurrencyLimit | None = None
    interval_id: IntervalId | None = None


def _time_of_day(value: str) -> str:
    if value:
        try:
            calling_windows.parse_time_of_day(value)
        except ValueError as err:
            raise PydanticCustomError("time_of_day", str(err)) from None
    return value


def _end_time_of_day(value: str) -> str:
    if value:
        try:
            calling_windows.parse_time_of_day(value, end=True)
        except ValueError as err:
            raise PydanticCustomError("time_of_day", str(err)) from None
    return value


def _wall_datetime(value: str) -> str:
    """Kept in the canonical form (seconds added when omitted)."""
    if not value:
        return value
    try:
        moment = calling_windows.parse_wall_datetime(value)
    except ValueError as err:
        raise PydanticCustomError("wall_datetime", str(err)) from None
    if moment.year < MIN_START_YEAR:
        raise PydanticCustomError("wall_datetime", f"must be in {MIN_START_YEAR} or later")
    return calling_windows.format_wall_datetime(moment)


def _timezone(value: str) -> str:
    if not calling_windows.is_known_timezone(value):
        raise PydanticCustomError(
            "timezone", "must be an IANA time zone name, such as Europe/Berlin or UTC"
        )
    return value


TimeOfDay = Annotated[str, Field(max_length=8), AfterValidator(_time_of_day)]
EndTimeOfDay = Annotated[str, Field(max_length=8), AfterValidator(_end_time_of_day)]
WallDatetime = Annotated[str, Field(max_length=19), AfterValidator(_wall_datetime)]
Timezone = Annotated[str, Field(max_length=MAX_TIMEZONE_LENGTH), AfterValidator(_timezone)]


class IntervalCondition(_Strict):
    """One condition, as the API shows it: "" and 0 are absent parts."""

    start_time: TimeOfDay = ""
    end_time: EndTimeOfDay = ""
    start_dow: Annotated[int, Field(ge=0, le=7)] = 0
    end_dow: Annotated[int, Field(ge=0, le=7)] = 0
    start_mday: Annotated[int, Field(ge=0, le=31)] = 0
    end_mday: Annotated[int, Field(ge=0, le=31)] = 0
    month: Annotated[int, Field(ge=0, le=12)] = 0
    start_datetime: WallDatetime = ""
    end_datetime: WallDatetime = ""

    @model_validator(mode="after")
    def _ranges(self) -> IntervalCondition:
        if self.start_time and self.end_time and self.start_time == self.end_time:
            raise PydanticCustomError(
                "time_range",
                "end_time must differ from start_time (leave both out for the whole day)",
            )
        if (
            self.start_datetime
            and self.end_datetime
            and self.end_datetime <= self.start_datetime  # canonical strings sort as times
        ):
            raise PydanticCustomError("datetime_range", "end_datetime must be after start_datetime")
        return self


Conditions = Annotated[list[IntervalCondition], Field(min_length=1, max_length=MAX_CONDITIONS)]


class NewInterval(_Strict):
    name: Name = ""
    timezone: Timezone
    conditions: Conditions


class IntervalChanges(_Strict):
    """A partial update: None means "keep the current value"."""

    name: Name | None = None
    timezone: Timezone | None = None
    conditions: Conditions | None = None


def _ring_timeout(value: int) -> int:
    if value and not MIN_RING_TIMEOUT <= value <= MAX_RING_TIMEOUT:
        raise PydanticCustomError(
            "ring_timeout",
            "must be a whole number of seconds from {low} to {high} "
            "(0 or absent: the dialer's ring timeout)",
            {"low": MIN_RING_TIMEOUT, "high": MAX_RING_TIMEOUT},
        )
    return value


# A callee's zone: "" is none (the interval's own).
CalleeTimezone = Annotated[str, Field(max_length=64), AfterValidator(lambda v: v and _timezone(v))]


class CallbackParams(_Strict):
    caller_id_name: Annotated[str, Field(max_length=64), AfterValidator(_display_name)] = ""
    caller_id_number: Annotated[str, AfterValidator(lambda v: v and _phone(v))] = ""
    extended_a_numbers: Annotated[list[Phone], Field(max_length=MAX_EXTENDED_A_NUMBERS)] = []
    # Seconds; 0: the dialer's own limit.
    call_duration: Annotated[int, Field(ge=0, le=MAX_CALL_DURATION)] = 0
    ring_timeout: Annotated[int, AfterValidator(_ring_timeout)] = 0
    # The callee's IANA time zone: its queue's interval is read in it ("": the interval's own).
    timezone: Annotated[str, Field(max_length=64), AfterValidator(lambda v: v and _timezone(v))] = (
        ""
    )


class NewTask(_Strict):
    name: Name = ""
    a_number: Phone
    b_number: Phone
    extension_id: Annotated[int, Field(ge=0)] = 0
    try_count: TryCount = 1
    try_again_pause: Pause = DEFAULT_TRY_AGAIN_PAUSE
    url_before: Url = ""
    url_before_again: Url = ""
    url_success: Url = ""
    url_after: Url = ""
    # None: as soon as the queue allows (the repository stores the server's "now").
    start_time_utc: Annotated[datetime | None, BeforeValidator(_start_time)] = None
    callback_params: CallbackParams = CallbackParams()
    try_count_caller: TryCountCaller = 0
    try_again_pause_caller: PauseCaller = 0


class TaskChanges(_Strict):
    """A reschedule (PUT of a task), a partial update: None means "keep the current value"."""

    start_time_utc: Annotated[datetime | None, BeforeValidator(_start_time)] = None
    try_count: TryCount | None = None
    try_again_pause: Pause | None = None
    url_before: Url | None = None
    url_before_again: Url | None = None
    url_success: Url | None = None
    url_after: Url | None = None
    callback_params: CallbackParams | None = None
    try_count_caller: TryCountCaller | None = None
    try_again_pause_caller: PauseCaller | None = None


# A task can be changed while it waits for its next attempt; not while one is in progress
# (the dialer has its numbers and URLs already), nor once it is finished.
CHANGEABLE_STATUSES = vocabulary.WAITING


def check_reschedulable(
    task_id: int, status: str, attempts: int, changes: TaskChanges, *, caller_failures: int
) -> None:
    """Raise Conflict if the task is past changing, InvalidInput if the new try_count (or
    try_count_caller, with `caller_failures` A-leg failures so far) would leave it no
    attempt to make."""
    if status not in CHANGEABLE_STATUSES:
        past_changing: dict[str, str] = {
            vocabulary.TaskStatus.EXECUTED: "an attempt is in progress; change it when it is "
            "'delayed' or add a new task",
            vocabulary.TaskStatus.FINISHED: "it is finished; add a new task instead",
        }
        why = past_changing.get(
            status, "only a waiting task (scheduled, delayed, delayed_interval) can be changed"
        )
        raise Conflict(f"task {task_id} is '{status}' and cannot be changed: {why}")
    violations: list[FieldViolation] = []
    if changes.try_count is not None and changes.try_count <= attempts:
        violations.append(
            FieldViolation(
                "try_count",
                f"must be more than the {attempts} attempt(s) already made "
                f"(at least {attempts + 1})",
            )
        )
    # 0 turns the A leg's own limit off; any other limit must leave A another try, as a
    # try_count must leave the task another attempt.
    caller = changes.try_count_caller
    if caller is not None and caller != 0 and caller <= caller_failures:
        violations.append(
            FieldViolation(
                "try_count_caller",
                f"must be 0 (off) or more than the {caller_failures} attempt(s) that already "
                f"failed at the A leg (at least {caller_failures + 1})",
            )
        )
    if violations:
        raise InvalidInput(violations)


def stored_task(fields: Mapping[str, Any]) -> NewTask:
    """A stored task (columns by name) as the NewTask it was created from; not validated
    again: it was when it was created."""
    names = NewTask.model_fields.keys() - {"callback_params"}
    params = CallbackParams.model_construct(**dict(fields["callback_params"] or {}))
    return NewTask.model_construct(**{name: fields[name] for name in names}, callback_params=params)


def rescheduled(task: NewTask, changes: TaskChanges) -> NewTask:
    """The task as it will be: its fields, with those the client changed replaced."""
    changed = {name: getattr(changes, name) for name in changes.model_fields_set}
    return task.model_copy(update=changed)


_M = TypeVar("_M", bound=BaseModel)


class Page(_Strict):
    after_id: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = MAX_PAGE


class TaskFilter(_Strict):
    status: TaskStatus | None = None
    number: Phone | None = None
    # Created at or after / before these moments (a half-open range).
    created_from_utc: Annotated[datetime | None, BeforeValidator(_start_time)] = None
    created_to_utc: Annotated[datetime | None, BeforeValidator(_start_time)] = None


def _field_name(prefix: str, loc: tuple[int | str, ...]) -> str:
    name = prefix
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")):
            name += f".{part}" if name else part
    return name


def _violations(err: ValidationError, prefix: str = "") -> list[FieldViolation]:
    return [
        FieldViolation(field=_field_name(prefix, tuple(e["loc"])) or "body", description=e["msg"])
        for e in err.errors(include_url=False)
    ]


def _validate(model: type[_M], data: Mapping[str, Any], prefix: str = "") -> _M:
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise InvalidInput(_violations(err, prefix)) from None


def new_queue(data: Mapping[str, Any]) -> NewQueue:
    return _validate(NewQueue, data)


def queue_changes(data: Mapping[str, Any]) -> QueueChanges:
    return _validate(QueueChanges, data)


def new_interval(data: Mapping[str, Any]) -> NewInterval:
    return _validate(NewInterval, data)


def interval_changes(data: Mapping[str, Any]) -> IntervalChanges:
    return _validate(IntervalChanges, data)


def task_changes(data: Mapping[str, Any]) -> TaskChanges:
    return _validate(TaskChanges, data)


def page(data: Mapping[str, Any]) -> Page:
    # 0 is what proto3 sends for "not given": it means the default page.
    cleaned = {k: v for k, v in data.items() if v != 0}
    return _validate(Page, cleaned)


def task_filter(
    status: str, number: str = "", created_from_utc: str = "", created_to_utc: str = ""
) -> TaskFilter:
    """The list's filters; "" (what proto3 sends for "not given") means no filter."""
    given = {
        "status": status,
        "number": number,
        # Form-encoding clients (httpx, browsers) send the space of a query time as "+",
        # which Envoy's transcoder passes on as is; a time has no other "+".
        "created_from_utc": created_from_utc.replace("+", " "),
        "created_to_utc": created_to_utc.replace("+", " "),
    }
    return _validate(TaskFilter, {k: v for k, v in given.items() if v})


def call_uuid(value: str) -> str:
    """A call id as the API hands it out (a UUID, in its canonical lower-case form)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput([FieldViolation("call_uuid", "must be a call id (a UUID)")]) from None


def new_tasks(items: list[Mapping[str, Any]]) -> list[NewTask]:
    """Validate a bulk add as a whole: every bad field of every task is reported at once."""
    if not 1 <= len(items) <= MAX_TASKS_PER_REQUEST:
        raise InvalidInput(
            [
                FieldViolation(
                    "tasks",
                    f"must contain from 1 to {MAX_TASKS_PER_REQUEST} tasks, got {len(items)}",
                )
            ]
        )
    tasks: list[NewTask] = []
    violations: list[FieldViolation] = []
    for index, item in enumerate(items):
        try:
            tasks.append(NewTask.model_validate(dict(item)))
        except ValidationError as err:
            violations.extend(_violations(err, f"tasks[{index}]"))
    if violations:
        raise InvalidInput(violations)
    return tasks
