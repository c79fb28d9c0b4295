"""The contract's time format: UTC strings `YYYY-MM-DD HH:MM:SS`."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

WIRE_FORMAT = "%Y-%m-%d %H:%M:%S"
# The spec says the seconds "can be specified": they are optional on input.
_INPUT_FORMATS = (WIRE_FORMAT, "%Y-%m-%d %H:%M")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def format_utc(moment: datetime) -> str:
    """Render an aware datetime as the contract's UTC string (4-digit year, always)."""
    # Cached by whole second, found with exact integer arithmetic (any year, any time zone):
    # cached by the moment itself, every call record's distinct microseconds missed the
    # cache (README, Benchmarks), and a bulk add renders the same creation time and mostly
    # the same start time for every task.
    return _format_second((moment - _EPOCH) // _SECOND)


@functools.lru_cache(maxsize=4096)
def _format_second(seconds: int) -> str:
    utc = _EPOCH + timedelta(seconds=seconds)
    # Not strftime: it takes 1.5 times as long.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )


def parse_utc(text: str) -> datetime:
    """Parse `YYYY-MM-DD HH:MM[:SS]` as UTC; raises ValueError with a readable message."""
    for fmt in _INPUT_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a UTC time in the format YYYY-MM-DD HH:MM:SS")
