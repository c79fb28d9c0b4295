"""CSV rows as the API's task objects, batches of them, and the Idempotency-Key of a batch.

No HTTP here: what a row becomes, which rows a batch holds and what its key is are decided
from the file alone, so that a second run over the same file (a resume) sends the same
requests with the same keys, and the API replays instead of creating twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BATCH_SIZE = 1000  # the API's largest bulk add
FIRST_DATA_ROW = 2  # rows are numbered as a spreadsheet shows them: the header is row 1

TEXT_COLUMNS = (
    "name",
    "a_number",
    "b_number",
    "url_before",
    "url_before_again",
    "url_success",
    "url_after",
    "start_time_utc",
)
# Sent as JSON numbers: the API refuses a string in these (try_again_pause_caller too, unlike
# try_again_pause), so a cell that is not a whole number is the file's fault, said per row.
INTEGER_COLUMNS = ("extension_id", "try_count", "try_count_caller", "try_again_pause_caller")
# try_again_pause is accepted by the API as a string or a number: sent as written.
PAUSE_COLUMN = "try_again_pause"
# callback_params, flattened: extended_a_numbers separated by spaces, commas or semicolons;
# timezone is the callee's IANA zone (the API checks it against its time zone database).
PARAM_TEXT_COLUMNS = ("caller_id_name", "caller_id_number", "timezone")
PARAM_COLUMNS = (*PARAM_TEXT_COLUMNS, "extended_a_numbers")
# Every column a header may name; the order is the one error messages and --help list.
COLUMNS = (
    *TEXT_COLUMNS,
    "extension_id",
    "try_count",
    PAUSE_COLUMN,
    "caller_id_name",
    "caller_id_number",
    "extended_a_numbers",
    # the vendor's newest revision
    "try_count_caller",
    "try_again_pause_caller",
    "timezone",
)
# ASCII digits only, as the console checks them: int() would also take "1_000" and other
# scripts' digits, which the console refuses; one file, one verdict.
_WHOLE_NUMBER = re.compile(r"^[+-]?[0-9]+$")
_INDEXED_FIELD = re.compile(r"^tasks\[(\d+)\]\.?(.*)$")


class CsvError(ValueError):
    """The file cannot be imported at all (no header, unknown columns)."""


@dataclass(frozen=True)
class Row:
    """One data row: its number in the file and the task it becomes (or why it cannot)."""

    number: int
    task: dict[str, Any]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A row the API (or the file's own format) refused, and every reason given."""

    row: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Batch:
    """Rows sent in one bulk add; `index` counts batches from 0 in file order."""

    index: int
    rows: tuple[Row, ...]
    skipped: tuple[Rejected, ...] = field(default=())


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: the identity of an import for its keys and state."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(text: str) -> list[Row]:
    """Every data row of a CSV whose header names task fields (see COLUMNS)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        raise CsvError("the file has no header row (a_number,b_number,... expected)")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise CsvError(
            f"unknown column(s) {', '.join(unknown)}; the columns are the task fields: "
            + ", ".join(COLUMNS)
        )
    reader.fieldnames = header
    return [row_task(FIRST_DATA_ROW + offset, values) for offset, values in enumerate(reader)]


def row_task(number: int, values: dict[str, str | None]) -> Row:
    """One CSV row as a task object; empty cells are left out (the API's defaults apply)."""
    cells = {k: (v or "").strip() for k, v in values.items() if k is not None}
    task: dict[str, Any] = {}
    problems = []
    for name in TEXT_COLUMNS:
        if cells.get(name):
            task[name] = cells[name]
    for name in INTEGER_COLUMNS:
        if cells.get(name):
            if _WHOLE_NUMBER.fullmatch(cells[name]):
                task[name] = int(cells[name])
            else:
                problems.append(f"{name}: must be a whole number, got {cells[name]!r}")
    if cells.get(PAUSE_COLUMN):
        task[PAUSE_COLUMN] = cells[PAUSE_COLUMN]
    params: dict[str, Any] = {}
    for name in PARAM_TEXT_COLUMNS:
        if cells.get(name):
            params[name] = cells[name]
    if cells.get("extended_a_numbers"):
        params["extended_a_numbers"] = re.split(r"[\s,;]+", cells["extended_a_numbers"])
    if params:
        task["callback_params"] = params
    return Row(number, task, tuple(problems))


def batches(rows: Sequence[Row], size: int = BATCH_SIZE) -> list[Batch]:
    """Rows in batches of `size` in file order; rows the file already makes unsendable are
    recorded with their batch instead of being sent."""
    result = []
    for index, start in enumerate(range(0, len(rows), size)):
        chunk = rows[start : start + size]
        result.append(
            Batch(
                index,
                tuple(r for r in chunk if not r.problems),
                tuple(Rejected(r.number, r.problems) for r in chunk if r.problems),
            )
        )
    return result


def idempotency_key(import_id: str, queue_id: int, batch: int, rows: Iterable[Row]) -> str:
    """The key of one bulk add: the import (its file's digest and the run, see importer), the
    queue, the batch and exactly which of its rows are sent (a retry without the rows the API
    refused is another request, so another key)."""
    numbers = ",".join(str(r.number) for r in rows)
    which = hashlib.sha256(numbers.encode()).hexdigest()[:16]
    return f"callbacks-import-{import_id}-q{queue_id}-b{batch}-{which}"


def violations_by_index(fields: Iterable[tuple[str, str]]) -> dict[int, list[str]]:
    """The API's field violations (`tasks[3].a_number`, why) by the index of the task in the
    request; those naming no task are left out."""
    found: dict[int, list[str]] = {}
    for name, description in fields:
        match = _INDEXED_FIELD.match(name)
        if match:
            index, rest = int(match.group(1)), match.group(2) or "task"
            found.setdefault(index, []).append(f"{rest}: {description}")
    return found
