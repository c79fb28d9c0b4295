"""Times as the REST API writes them ("YYYY-MM-DD HH:MM:SS", UTC, whole seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"


def wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(WIRE_FORMAT)


def parse_wire(text: str) -> datetime:
    return datetime.strptime(text, WIRE_FORMAT).replace(tzinfo=UTC)


def stamped_between(text: str, before: datetime, after: datetime) -> bool:
    """A wire time (whole seconds) the database stamped between two readings of its clock
    (database.db_now): no margin against our clock for how long the request took."""
    return before.replace(microsecond=0) <= parse_wire(text) <= after


def whole_seconds_from_now(seconds: float) -> datetime:
    """A UTC moment about `seconds` from now, truncated to the second (the wire precision)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
