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
        "COLUMNS": "200",  # rich tables, not wrapped
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
