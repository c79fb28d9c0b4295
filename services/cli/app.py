"""The `callbacks` command (typer for arguments, rich for tables and progress, httpx for HTTP).

Exit codes: 0 done, 1 the API or the network refused, 2 bad arguments or file, 3 an import
finished with rejected rows, 130 interrupted (Ctrl-C; an import resumes where it stopped).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from services.cli import exports
from services.cli.api import ApiError, RestApi
from services.cli.importer import ImportResult, default_state_path, import_csv
from services.cli.rows import BATCH_SIZE, CsvError
from services.cli.watch import Rate, Sample, sample

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_API, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 1, 2, 3, 130

app = typer.Typer(
    help="Queues, tasks and calls of callback-scheduler, through its public REST API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Import tasks from CSV, export them to CSV.", no_args_is_help=True)
calls_app = typer.Typer(help="Export call records to CSV.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(calls_app, name="calls")

out = Console()
err = Console(stderr=True)


class _Connection:
    url = DEFAULT_URL
    token = ""
    client = "@me"


@app.callback()
def connection(
    url: Annotated[
        str, typer.Option(envvar="CALLBACKS_URL", help="The REST API (Envoy).")
    ] = DEFAULT_URL,
    token: Annotated[
        str, typer.Option(envvar="CALLBACKS_TOKEN", help="Bearer token (`make token`).")
    ] = "",
    client: Annotated[
        str, typer.Option(envvar="CALLBACKS_CLIENT", help="client_id; @me: the token's own.")
    ] = "@me",
) -> None:
    """Token and URL from the options or the environment (CALLBACKS_TOKEN, CALLBACKS_URL)."""
    _Connection.url, _Connection.token, _Connection.client = url, token, client


@contextlib.contextmanager
def _api() -> Iterator[RestApi]:
    """The API client; its errors end the command with one line on stderr."""
    if not _Connection.token:
        err.print("no token: pass --token or set CALLBACKS_TOKEN (make token CLIENT=<id>)")
        raise typer.Exit(EXIT_USAGE)
    try:
        with RestApi(_Connection.url, _Connection.token, client=_Connection.client) as api:
            yield api
    except ApiError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        for violation in error.violations:
            err.print(f"  {violation.field}: {violation.description}", markup=False)
        raise typer.Exit(EXIT_API) from None
    except httpx.HTTPError as error:
        err.print(f"error: cannot reach {_Connection.url}: {error}", markup=False)
        raise typer.Exit(EXIT_API) from None


# Task statuses as the list filter takes them (the API's words), in the order a task meets them.
COUNTED_STATUSES = (
    "scheduled",
    "executed",
    "delayed",
    "delayed_interval",
    "delayed_concurrent_task",
    "finished",
)


@app.command()
def queues(
    counts: Annotated[
        bool,
        typer.Option("--counts", help="Also count each queue's tasks by status (pages of them)."),
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Write CSV to stdout (every field) instead.")
    ] = False,
) -> None:
    """List the queues: id, name, status, limit, comment, created, calling window
    (interval_id; -: none), tasks, not finished, last call; --counts adds tasks by status."""
    with _api() as api:
        listed = api.queues()
        if as_csv:
            exports.write_csv(sys.stdout, exports.QUEUE_COLUMNS, map(exports.queue_row, listed))
            return
        table = Table(
            "id",
            "name",
            "status",
            "limit",
            "comment",
            "created (UTC)",
            "interval",
            Column("tasks", justify="right"),
            Column("not finished", justify="right"),
            "last call (UTC)",
        )
        if counts:
            for status in COUNTED_STATUSES:
                table.add_column(status, justify="right")
        for queue in listed:
            cells = [
                str(queue["id"]),
                queue["name"],
                queue["status"],
                str(queue["concurrent_task_limit"]),
                queue["comment"],
                queue["create_date_utc"],
                str(queue.get("interval_id") or "-"),
                f"{int(queue.get('task_count') or 0):,}",
                f"{int(queue.get('sched_task_count') or 0):,}",
                queue.get("last_call_date") or "-",
            ]
            if counts:
                cells += [f"{api.count_tasks(int(queue['id']), s):,}" for s in COUNTED_STATUSES]
            # Text, not a markup string: a tenant's queue name or comment such as "[red]" is
            # shown as written, never read as rich markup.
            table.add_row(*(Text(c) for c in cells))
        out.print(table)


class _RateColumn(ProgressColumn):
    """Rows per second, from rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rows/s" if speed is None else f"{speed:,.0f} rows/s")


@tasks_app.command("import")
def tasks_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, header = task fields")
    ],
    queue: Annotated[int, typer.Option("--queue", "-q", help="Queue id.")],
    state: Annotated[
        Path | None,
        typer.Option(help="State file for resuming [default: FILE.q<ID>.import-state.json]"),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=BATCH_SIZE, help="Tasks per bulk add.")
    ] = BATCH_SIZE,
) -> None:
    """Add a CSV's rows as tasks, in bulk adds of 1,000; Ctrl-C and run again to resume.

    Columns: name, a_number, b_number, extension_id, try_count, try_again_pause, url_before,
    url_before_again, url_success, url_after, start_time_utc, caller_id_name,
    caller_id_number, extended_a_numbers (separated by spaces), try_count_caller,
    try_again_pause_caller (whole seconds), timezone (the callee's IANA zone, e.g.
    Europe/Berlin: callback_params.timezone). An empty cell takes the API's default. Rows the
    API refuses are listed at the end with its reasons; the others are added.
    """
    state_path = state or default_state_path(file, queue)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    bar = progress.add_task(f"queue {queue}", total=None)

    def started(total: int, done: int) -> None:
        progress.update(bar, total=total)
        if done:
            err.print(f"resuming: {done:,} of {total:,} rows were done")
            progress.update(bar, completed=done)
            # rich measures speed from advances: the resumed rows are not this run's.
            progress.reset(bar, total=total, completed=done)

    with _api() as api:
        try:
            with progress:
                result = import_csv(
                    api,
                    file,
                    queue,
                    state_path=state_path,
                    batch_size=batch_size,
                    on_start=started,
                    on_rows=lambda rows: progress.advance(bar, rows),
                )
        except CsvError as error:
            err.print(f"error: {file}: {error}", markup=False)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            err.print(
                f"interrupted: run the same command again to resume (state: {state_path})",
                markup=False,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    _report(result, queue, state_path)
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


def _report(result: ImportResult, queue: int, state_path: Path) -> None:
    resumed = f", {result.batches_resumed} done before" if result.batches_resumed else ""
    out.print(
        f"{result.created:,} of {result.rows:,} rows added to queue {queue} "
        f"({result.batches_sent} bulk adds sent{resumed}); "
        f"{len(result.rejected):,} rejected",
        highlight=False,
    )
    if result.rejected:
        table = Table("row", "reasons (the API's)", title="Rejected rows")
        for rejected in result.rejected:
            table.add_row(str(rejected.row), Text("\n".join(rejected.reasons)))
        out.print(table)
    out.print(
        f"state: {state_path} (delete it to import the same file again as new tasks)",
        highlight=False,
        markup=False,
    )


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", newline="", encoding="utf-8") as stream:
        yield stream


@tasks_app.command("export")
def tasks_export(
    queue: Annotated[int | None, typer.Option("--queue", "-q", help="Queue id [all].")] = None,
    status: Annotated[
        str,
        typer.Option(
            help="Only this status (scheduled, executed, delayed, delayed_interval, "
            "delayed_concurrent_task, finished)."
        ),
    ] = "",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="[stdout]")] = None,
) -> None:
    """Write tasks as CSV (every field the API shows; callback_params in columns of its own;
    try_count_caller, try_again_pause_caller and timezone last)."""
    with _api() as api, _output(output) as stream:
        rows = (
            exports.task_row(t)
            for t in exports.tasks_of(api, exports.queue_ids(api, queue), status)
        )
        count = exports.write_csv(stream, exports.TASK_COLUMNS, rows)
    err.print(f"{count:,} tasks exported", highlight=False)


@calls_app.command("export")
def calls_export(
    queue: Annotated[int | None, typer.Option("--queue", "-q", help="Queue id [all].")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="[stdout]")] = None,
) -> None:
    """Write the call records of the queues' tasks as CSV (one row per call, legs as JSON)."""
    with _api() as api, _output(output) as stream:
        rows = (exports.call_row(c) for c in exports.calls_of(api, exports.queue_ids(api, queue)))
        count = exports.write_csv(stream, exports.CALL_COLUMNS, rows)
    err.print(f"{count:,} calls exported", highlight=False)


def _watch_table(queue: int, latest: Sample, per_minute: float | None) -> Table:
    # The title as Text: the queue's name is the tenant's, never rich markup.
    title = Text(f"queue {queue} {latest.name} ({latest.status})")
    table = Table(title=title, show_header=False)
    table.add_column(justify="right")
    table.add_column()
    rate = "measuring" if per_minute is None else f"{per_minute:,.1f}"
    for label, value in (
        ("in flight / limit", f"{latest.in_flight} / {latest.limit}"),
        ("due", f"{latest.due:,}"),
        ("held by the limit", f"{latest.held_by_limit:,}"),
        ("held by the window", f"{latest.held_by_window:,}"),
        ("scheduled later", f"{latest.later:,}"),
        ("delayed (retry pause)", f"{latest.delayed:,}"),
        ("finished", f"{latest.finished:,} ({latest.failed:,} failed)"),
        ("finished per minute", rate),
    ):
        table.add_row(label, value)
    return table


@app.command()
def watch(
    queue: Annotated[int, typer.Argument(help="Queue id.")],
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between samples.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="One sample, printed, then exit.")] = False,
) -> None:
    """A queue live: in flight vs its limit, due, held by the limit (delayed_concurrent_task)
    or by the calling window (delayed_interval), finished per minute (Ctrl-C stops)."""
    rate = Rate()
    with _api() as api:
        latest = sample(api, queue, time.monotonic())
        if once:
            out.print(_watch_table(queue, latest, None))
            return
        try:
            with Live(_watch_table(queue, latest, rate.add(latest)), console=out) as live:
                while True:
                    time.sleep(interval)
                    latest = sample(api, queue, time.monotonic())
                    live.update(_watch_table(queue, latest, rate.add(latest)))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `callbacks tasks export | head`: the reader has gone, which is not an error.
        sys.stderr.close()
        sys.exit(0)
