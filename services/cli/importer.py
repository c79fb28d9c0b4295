"""`callbacks tasks import`: a CSV into a queue, 1,000 rows per bulk add, resumable.

Resuming never doubles a task. A small state file beside the CSV records the import's id and
each batch once the API has answered it; every bulk add carries an Idempotency-Key derived from
that id, the batch and its rows. A batch the state file does not list as done is sent again
with the same key: if the API had committed it before the interruption, it replays its answer
(the same task ids) instead of creating the tasks again. Keys live 24 hours on the API's side:
resume within that time.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.cli.api import ApiError, RestApi
from services.cli.rows import (
    BATCH_SIZE,
    Batch,
    Rejected,
    Row,
    batches,
    file_digest,
    idempotency_key,
    read_rows,
    violations_by_index,
)

STATE_VERSION = 1


@dataclass
class ImportState:
    """What the state file keeps: which import this is and which batches are done."""

    path: Path
    digest: str
    queue_id: int
    batch_size: int
    run: str
    done: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def import_id(self) -> str:
        return f"{self.digest[:24]}-{self.run}"

    def save(self) -> None:
        """Write the state atomically (a rename), so an interruption leaves the old or new."""
        body = {
            "version": STATE_VERSION,
            "file_sha256": self.digest,
            "queue_id": self.queue_id,
            "batch_size": self.batch_size,
            "run": self.run,
            "done": {str(k): v for k, v in sorted(self.done.items())},
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(temporary, self.path)


def default_state_path(csv_path: Path, queue_id: int) -> Path:
    return csv_path.with_name(f"{csv_path.name}.q{queue_id}.import-state.json")


def open_state(path: Path, digest: str, queue_id: int, batch_size: int) -> ImportState:
    """The state of this import: resumed from the file if it is for the same CSV content,
    queue and batch size, else a new run (new keys)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if (
        isinstance(saved, dict)
        and saved.get("version") == STATE_VERSION
        and saved.get("file_sha256") == digest
        and saved.get("queue_id") == queue_id
        and saved.get("batch_size") == batch_size
    ):
        done = {int(k): v for k, v in saved.get("done", {}).items()}
        return ImportState(path, digest, queue_id, batch_size, str(saved["run"]), done)
    state = ImportState(path, digest, queue_id, batch_size, secrets.token_hex(4))
    state.save()  # before the first request: its keys must be found again
    return state


@dataclass(frozen=True)
class ImportResult:
    rows: int
    created: int
    rejected: tuple[Rejected, ...]
    batches_sent: int
    batches_resumed: int


Progress = Callable[[int], None]


def import_csv(
    api: RestApi,
    csv_path: Path,
    queue_id: int,
    *,
    state_path: Path | None = None,
    batch_size: int = BATCH_SIZE,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_rows: Progress = lambda rows: None,
) -> ImportResult:
    """Import the file; KeyboardInterrupt (Ctrl-C) leaves a state file to resume from.

    on_start(total rows, rows already done) is called once, on_rows(n) after each batch.
    """
    digest = file_digest(csv_path)
    rows = read_rows(csv_path.read_text(encoding="utf-8-sig"))
    state = open_state(
        state_path or default_state_path(csv_path, queue_id), digest, queue_id, batch_size
    )
    plan = batches(rows, batch_size)
    resumed = [b for b in plan if b.index in state.done]
    on_start(len(rows), sum(len(b.rows) + len(b.skipped) for b in resumed))
    sent = 0
    for batch in plan:
        if batch.index in state.done:
            continue
        created, rejected = _send(api, state, batch, list(batch.rows))
        state.done[batch.index] = {
            "created": len(created),
            "rejected": [[r.row, list(r.reasons)] for r in [*batch.skipped, *rejected]],
        }
        state.save()
        sent += 1
        on_rows(len(batch.rows) + len(batch.skipped))
    all_rejected = tuple(
        Rejected(int(row), tuple(reasons))
        for index in sorted(state.done)
        for row, reasons in state.done[index]["rejected"]
    )
    return ImportResult(
        rows=len(rows),
        created=sum(int(d["created"]) for d in state.done.values()),
        rejected=tuple(sorted(all_rejected, key=lambda r: r.row)),
        batches_sent=sent,
        batches_resumed=len(resumed),
    )


def _send(
    api: RestApi, state: ImportState, batch: Batch, rows: Sequence[Row]
) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """Add the rows the API accepts (a bulk add is all or nothing: the rows it names as bad
    are set aside with its reasons and the rest sent again, under a new key)."""
    rejected: list[Rejected] = []
    rows = list(rows)
    while rows:
        key = idempotency_key(state.import_id, state.queue_id, batch.index, rows)
        try:
            return api.add_tasks(state.queue_id, [r.task for r in rows], key), rejected
        except ApiError as error:
            if error.status == 413 and len(rows) > 1:
                named = {}  # over the gateway's 4 MiB (long URLs): halves, below
            elif error.status != 400:
                raise
            else:
                named = violations_by_index((v.field, v.description) for v in error.violations)
            named = {i: reasons for i, reasons in named.items() if i < len(rows)}
            if named:
                rejected += [Rejected(rows[i].number, tuple(r)) for i, r in named.items()]
                rows = [row for i, row in enumerate(rows) if i not in named]
            elif len(rows) == 1:
                # Refused without naming a task (a field of the wrong JSON type is refused
                # by the gateway before validation): the row is the culprit.
                rejected.append(Rejected(rows[0].number, (error.message,)))
                rows = []
            else:
                # Somewhere in these rows (or too many bytes of them): halves, each its own
                # request and key.
                middle = len(rows) // 2
                first, bad_first = _send(api, state, batch, rows[:middle])
                second, bad_second = _send(api, state, batch, rows[middle:])
                return first + second, rejected + bad_first + bad_second
    return [], rejected
