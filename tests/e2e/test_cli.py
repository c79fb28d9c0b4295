"""The `callbacks` command against the real stack, through Envoy, as an installed command:
imports with rejected rows, a resumed import that doubles nothing, exports, watch."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from deploy.local.stack import Stack
from tests.support.queues import Queue, create_queue
from tests.support.simulated_phones import ANSWERING_NUMBER, BUSY_NUMBER
from tests.support.waiting import wait_for

CALLBACKS = Path(sys.executable).with_name("callbacks")
HEADER = "name,a_number,b_number,try_count,url_after,caller_id_name,extended_a_numbers\n"


def run(
    stack: Stack, tenant: str, *argv: str, check_code: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """The installed command, with its token and URL from the environment."""
    result = subprocess.run(
        [str(CALLBACKS), *argv],
        env=cli_env(stack, tenant),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    if check_code is not None:
        assert result.returncode == check_code, result.stdout + result.stderr
    return result


def cli_env(stack: Stack, tenant: str) -> dict[str, str]:
    return {
        **os.environ,
        "CALLBACKS_URL": stack.rest_url,
        "CALLBACKS_TOKEN": stack.token(tenant),
        "COLUMNS": "400",  # rich tables, not wrapped (queues --counts is wide)
    }


@contextmanager
def gate_after_posts(upstream: str, posts: int) -> Iterator[str]:
    """An HTTP forwarder to `upstream` that passes the first `posts` POSTs and holds every
    later one unanswered until it closes (then answers 503): a client cut off mid-import."""
    released = threading.Event()
    passed = 0
    lock = threading.Lock()

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            nonlocal passed
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "POST":
                with lock:
                    passed += 1
                    held = passed > posts
                if held:
                    released.wait()
                    self.send_error(503)
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            url = upstream + self.path
            answer = httpx.request(self.command, url, headers=headers, content=body)
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers.get("content-type", "text/plain"))
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        released.set()
        server.shutdown()
        server.server_close()


@contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Children started inside get SIGINT's default action, as from a terminal.

    A shell that runs `make test &` without job control ignores SIGINT for it, and an ignored
    signal stays ignored across exec: the CLI would never see this test's Ctrl-C (measured: a
    fresh-clone run in the background hung here). A handler set here is reset at exec instead.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def new_queue(api: httpx.Client, tenant: str, **fields: Any) -> int:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "cli", **fields})
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def all_tasks(api: httpx.Client, tenant: str, queue: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while True:
        page = api.get(
            f"/client/{tenant}/task_scheduler/{queue}/task/",
            params={"limit": 1000, "after_id": tasks[-1]["id"] if tasks else 0},
        ).json()
        tasks += page
        if len(page) < 1000:
            return tasks


def test_import_adds_the_good_rows_and_reports_the_bad_with_the_apis_reasons(
    stack: Stack, api: httpx.Client, tenant: str, tmp_path: Path
) -> None:
    queue = new_queue(api, tenant)
    leads = tmp_path / "leads.csv"
    leads.write_text(
        HEADER
        + "one,+15550001111,+15550002222,3,https://example.com/after,Sales,"
        + "+15550001112 +15550001113\n"
        + "bad a,not-a-number,+15550002222,,,,\n"  # row 3: refused by the API
        + "two,+15550001111,+15550002222,,,,\n"
        + "bad count,+15550001111,+15550002222,many,,,\n"  # row 5: not a whole number
        + "bad both,+15550001111,+15550002222,99,ftp://x,,\n"  # row 6: two reasons
        + "three,101,102,,,,\n"
    )

    result = run(stack, tenant, "tasks", "import", str(leads), "--queue", str(queue), check_code=3)

    assert "3 of 6 rows added" in result.stdout, result.stdout
    report = result.stdout
    assert "must be a phone number" in report  # the API's own words
    assert "try_count: must be a whole number, got 'many'" in report
    assert "try_count" in report and "url_after" in report
    rows_reported = [line.split("│")[1].strip() for line in report.splitlines() if "│" in line]
    assert {"3", "5", "6"} <= set(rows_reported), report
    tasks = all_tasks(api, tenant, queue)
    assert sorted(t["name"] for t in tasks) == ["one", "three", "two"]
    one = next(t for t in tasks if t["name"] == "one")
    assert one["try_count"] == 3
    assert one["url_after"] == "https://example.com/after"
    assert one["callback_params"]["extended_a_numbers"] == ["+15550001112", "+15550001113"]


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of a rich table as the command printed it, its header first
    (rich draws the header's rules heavier: ┃)."""
    lines = [line.replace("┃", "│") for line in output.splitlines()]
    return [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.count("│") >= 2
    ]


def test_import_and_export_the_newest_revisions_fields(
    stack: Stack, api: httpx.Client, tenant: str, tmp_path: Path
) -> None:
    queue = new_queue(api, tenant)  # off: nothing is called
    leads = tmp_path / "newest.csv"
    leads.write_text(
        "name,a_number,b_number,try_count_caller,try_again_pause_caller,timezone\n"
        "zoned,+15550001111,+15550002222,2,600,Europe/Berlin\n"
        "mars,+15550001111,+15550002222,,,Mars/Olympus\n"  # row 3: refused by the API
        "greedy,+15550001111,+15550002222,99,,\n"  # row 4: over the API's 50
        "words,+15550001111,+15550002222,,ten,\n"  # row 5: not a whole number
        "plain,+15550001111,+15550002222,,,\n"
    )

    result = run(stack, tenant, "tasks", "import", str(leads), "--queue", str(queue), check_code=3)

    assert "2 of 5 rows added" in result.stdout, result.stdout
    reasons = {row[0]: row[1] for row in table_rows(result.stdout) if row[0].isdigit()}
    assert set(reasons) == {"3", "4", "5"}, result.stdout
    assert "callback_params.timezone: must be an IANA time zone name" in reasons["3"]
    assert reasons["4"].startswith("try_count_caller:")
    assert reasons["5"] == "try_again_pause_caller: must be a whole number, got 'ten'"
    by_name = {t["name"]: t for t in all_tasks(api, tenant, queue)}
    assert set(by_name) == {"zoned", "plain"}
    zoned = by_name["zoned"]
    assert (zoned["try_count_caller"], zoned["try_again_pause_caller"]) == (2, 600)
    assert zoned["callback_params"]["timezone"] == "Europe/Berlin"
    assert (
        by_name["plain"]["try_count_caller"],
        by_name["plain"]["callback_params"]["timezone"],
    ) == (0, "")

    exported = run(stack, tenant, "tasks", "export", "--queue", str(queue)).stdout
    header, *rows = list(csv.reader(io.StringIO(exported)))
    # Existing columns keep their places (a spreadsheet reads them by position); new ones last.
    assert header[:3] == ["id", "scheduler_id", "name"]
    assert header[18:21] == ["caller_id_name", "caller_id_number", "extended_a_numbers"]
    assert header[21:] == ["try_count_caller", "try_again_pause_caller", "timezone"]
    assert {r[2]: r[21:] for r in rows} == {
        "zoned": ["2", "600", "Europe/Berlin"],
        "plain": ["0", "0", ""],
    }


def test_an_interrupted_import_resumes_without_doubling_a_task(
    stack: Stack, api: httpx.Client, tenant: str, tmp_path: Path
) -> None:
    queue = new_queue(api, tenant)
    rows = 2500
    leads = tmp_path / "many.csv"
    leads.write_text(
        "name,a_number,b_number\n"
        + "".join(f"lead {i},+1555{i:07d},+15550002222\n" for i in range(rows))
    )
    state = tmp_path / f"many.csv.q{queue}.import-state.json"
    argv = ["tasks", "import", str(leads), "--queue", str(queue), "--batch-size", "100"]

    def batches_done() -> int:
        try:
            return len(json.loads(state.read_text())["done"])
        except (OSError, ValueError, KeyError):
            return 0

    # The CLI goes through a gate that lets three batches through and holds the fourth: the
    # Ctrl-C comes while the import is under way, however fast the machine imports.
    with (
        gate_after_posts(stack.rest_url, 3) as gate_url,
        sigint_not_ignored(),
        subprocess.Popen(
            [str(CALLBACKS), *argv],
            env={**cli_env(stack, tenant), "CALLBACKS_URL": gate_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as first,
    ):
        try:
            wait_for(lambda: batches_done() >= 3, 60, "three batches recorded")
            first.send_signal(signal.SIGINT)  # Ctrl-C
            _, stderr = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    interrupted_at = len(all_tasks(api, tenant, queue))
    assert 300 <= interrupted_at < rows
    # The hardest moment for a Ctrl-C: the API committed a batch, its answer never reached
    # the state file. Forget the last recorded batch as if so: it is sent again.
    saved = json.loads(state.read_text())
    last = max(saved["done"], key=int)
    del saved["done"][last]
    state.write_text(json.dumps(saved))

    resumed = run(stack, tenant, *argv)

    assert f"{rows:,} of {rows:,} rows added" in resumed.stdout, resumed.stdout
    assert "resuming:" in resumed.stderr
    tasks = all_tasks(api, tenant, queue)
    assert len(tasks) == rows
    assert sorted(t["name"] for t in tasks) == sorted(f"lead {i}" for i in range(rows))

    again = run(stack, tenant, *argv)  # all done: nothing is sent
    assert "0 bulk adds sent" in again.stdout
    assert len(all_tasks(api, tenant, queue)) == rows


def test_exports_list_what_the_api_shows(
    stack: Stack, api: httpx.Client, tenant: str, tmp_path: Path
) -> None:
    queue = new_queue(api, tenant, status="on", concurrent_task_limit=5)
    body = {
        "tasks": [
            {"name": "ok", "a_number": ANSWERING_NUMBER, "b_number": ANSWERING_NUMBER},
            {"name": "busy", "a_number": BUSY_NUMBER, "b_number": ANSWERING_NUMBER},
        ]
    }
    created = api.post(f"/client/{tenant}/task_scheduler/{queue}/tasks/", json=body).json()
    wait_for(
        lambda: all(t["status"] == "finished" for t in all_tasks(api, tenant, queue)),
        60,
        "both tasks finished",
    )

    tasks_csv = tmp_path / "tasks.csv"
    run(stack, tenant, "tasks", "export", "--queue", str(queue), "-o", str(tasks_csv))
    exported = list(csv.DictReader(io.StringIO(tasks_csv.read_text())))
    assert [int(r["id"]) for r in exported] == [t["id"] for t in created]
    assert {r["name"]: r["finish_result"] for r in exported} == {"ok": "success", "busy": "failed"}
    finished = run(stack, tenant, "tasks", "export", "--status", "scheduled")
    assert list(csv.DictReader(io.StringIO(finished.stdout))) == []

    calls = run(stack, tenant, "calls", "export", "--queue", str(queue))
    records = {r["task_id"]: r for r in csv.DictReader(io.StringIO(calls.stdout))}
    by_name = {t["name"]: str(t["id"]) for t in created}
    assert records[by_name["ok"]]["result"] == "connected"
    assert records[by_name["busy"]]["result"] == "a_busy"
    assert records[by_name["ok"]]["a_result"] == "answered"
    assert json.loads(records[by_name["ok"]]["legs"])[0]["role"] == "a"
    tasks_by_id = {str(t["id"]): t for t in all_tasks(api, tenant, queue)}
    assert all(r["call_uuid"] == tasks_by_id[r["task_id"]]["cdr"] for r in records.values())

    # The queue with its counters, as the API shows them.
    listed = run(stack, tenant, "queues", "--csv").stdout
    (row,) = [r for r in csv.DictReader(io.StringIO(listed)) if r["id"] == str(queue)]
    shown = api.get(f"/client/{tenant}/task_scheduler/{queue}").json()
    assert row == {name: str(value) for name, value in shown.items()}
    assert (row["task_count"], row["sched_task_count"]) == ("2", "0")
    assert row["last_call_date"] != ""


def test_queues_and_watch_show_the_queue(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant, concurrent_task_limit=7, comment="leads")
    api.post(
        f"/client/{tenant}/task_scheduler/{queue}/tasks/",
        json={
            "tasks": [
                {"a_number": "101", "b_number": "102"},
                {"a_number": "101", "b_number": "102", "start_time_utc": "2099-01-01 00:00:00"},
            ]
        },
    )

    listed = run(stack, tenant, "queues", "--counts").stdout
    assert "leads" in listed and "7" in listed and "off" in listed
    watched = run(stack, tenant, "watch", str(queue), "--once").stdout
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in watched.splitlines()
        if line.count("│") == 3
    }
    assert lines["in flight / limit"] == "0 / 7"
    assert lines["due"] == "1"
    assert lines["scheduled later"] == "1"


def test_queues_and_watch_show_tasks_held_by_the_window_and_by_the_limit(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    interval = api.post(
        f"/client/{tenant}/interval/",
        json={
            "name": "closed",
            "timezone": "UTC",
            "conditions": [
                {"start_datetime": "2020-01-01 00:00:00", "end_datetime": "2020-01-02 00:00:00"}
            ],
        },
    ).json()
    # A tenant's name, shown as written: never read as rich markup.
    windowed = Queue(api, tenant, new_queue(api, tenant, name="[red]held[/red]"))
    windowed.set(interval_id=interval["id"], status="on")
    held = windowed.add_one()
    windowed.wait_status(held["id"], "delayed_interval")
    # A tenant allowed no callback in progress: a due task of a switched-on queue waits as
    # held by the limit (delayed_concurrent_task), for good.
    stack.admin("set", tenant, "--max-in-progress", "0")
    limited = create_queue(api, tenant, limit=3)
    waiting = limited.add_one()
    limited.wait_status(waiting["id"], "delayed_concurrent_task")

    def watched(queue: int) -> dict[str, str]:
        output = run(stack, tenant, "watch", str(queue), "--once").stdout
        rows = {row[0]: row[1] for row in table_rows(output) if len(row) == 2}
        return {"title": output.strip().splitlines()[0].strip(), **rows}

    by_window = watched(windowed.id)
    assert by_window["title"] == f"queue {windowed.id} [red]held[/red] (on)"
    assert (by_window["held by the window"], by_window["held by the limit"]) == ("1", "0")
    assert by_window["due"] == "0"
    by_limit = watched(limited.id)
    assert (by_limit["held by the window"], by_limit["held by the limit"]) == ("0", "1")
    assert by_limit["due"] == "0"

    listed = run(stack, tenant, "queues", "--counts").stdout
    header, *rows = table_rows(listed)
    queues = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert queues[str(windowed.id)]["interval"] == str(interval["id"])
    assert queues[str(limited.id)]["interval"] == "-"
    for queue in (windowed, limited):
        shown = queues[str(queue.id)]
        assert (shown["tasks"], shown["not finished"], shown["last call (UTC)"]) == ("1", "1", "-")
    assert queues[str(windowed.id)]["delayed_interval"] == "1"
    assert queues[str(limited.id)]["delayed_concurrent_task"] == "1"


def test_a_bad_token_is_one_line_from_the_api(stack: Stack, tenant: str) -> None:
    result = subprocess.run(
        [str(CALLBACKS), "--token", "nope", "--url", stack.rest_url, "queues"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "401 UNAUTHENTICATED" in result.stderr
