"""The web console, served by Envoy at /console/, in a real browser (Debian's Chromium driven
by Playwright) against the real stack: sign in, create a queue, upload a CSV, watch a task
finish, open its call record. And what Envoy serves there: static files with a strict
policy, and no way past the token to the API.

CONSOLE_SCREENSHOTS=<folder> saves screenshots of the main pages there (the README's come
from `CONSOLE_SCREENSHOTS=docs pytest tests/e2e/test_console.py`).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Page, Route, expect, sync_playwright

from deploy.local.stack import Stack
from tests.support.simulated_phones import ANSWERING_NUMBER, BUSY_NUMBER

SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
WAIT_MS = 60_000


def all_tasks(api: httpx.Client, queue: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while True:
        after = tasks[-1]["id"] if tasks else 0
        page = api.get(f"{queue}/task/", params={"limit": 1000, "after_id": after}).json()
        tasks += page
        if len(page) < 1000:
            return tasks


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is missing: `make system-deps` installs Debian's (apt)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # The system Chromium; as root it needs --no-sandbox.
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], errors  # no uncaught script error on any page


def snap(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True)


def test_sign_in_create_a_queue_upload_a_csv_and_follow_a_task_to_its_call_record(
    stack: Stack, page: Page, api: httpx.Client, tenant: str
) -> None:
    page.goto(f"{stack.rest_url}/console/")
    page.get_by_label("Bearer token").fill("not a token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_contain_text("Not signed in: 401")

    page.get_by_label("Bearer token").fill(stack.token(tenant))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Queues", level=1)).to_be_visible()
    expect(page.get_by_text(f"client {tenant}")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("leads")
    page.get_by_label("Comment").fill("from the console")
    page.get_by_label("Concurrent task limit").fill("2")
    page.get_by_label("Start switched on").check()
    page.get_by_role("button", name="Create queue").click()
    expect(page.get_by_role("link", name="leads")).to_be_visible()
    (queue,) = api.get(f"/client/{tenant}/task_scheduler/").json()
    assert (queue["name"], queue["status"], queue["concurrent_task_limit"]) == ("leads", "on", 2)
    expect(page.get_by_role("switch", name="Queue leads on")).to_be_checked()
    snap(page, "queues")

    page.get_by_role("link", name="leads").click()
    expect(page.get_by_role("heading", name="leads", level=1)).to_be_visible()
    csv = (
        "name,a_number,b_number,try_count\n"
        f"first,{ANSWERING_NUMBER},{ANSWERING_NUMBER},1\n"
        f"wrong,call me,{ANSWERING_NUMBER},1\n"
        f"busy,{BUSY_NUMBER},{ANSWERING_NUMBER},many\n"
        f"second,{ANSWERING_NUMBER},{BUSY_NUMBER},1\n"
    )
    page.get_by_label("CSV file", exact=True).set_input_files(
        files=FilePayload(name="leads.csv", mimeType="text/csv", buffer=csv.encode())
    )
    expect(page.get_by_text("4 rows in 1 batch(es)")).to_be_visible()
    page.get_by_role("button", name="Add tasks").click()
    expect(page.get_by_text("2 of 4 rows added; 2 rejected.")).to_be_visible()
    rejected = page.get_by_role("table").filter(has_text="Rejected rows")
    expect(rejected).to_contain_text("must be a phone number")  # the API's message, row 3
    expect(rejected).to_contain_text("try_count: must be a whole number")  # row 4
    expect(page.get_by_role("progressbar", name="Upload progress")).to_have_attribute("value", "1")
    tasks = api.get(f"/client/{tenant}/task_scheduler/{queue['id']}/task/").json()
    assert sorted(t["name"] for t in tasks) == ["first", "second"]

    # The same file again (a reload, a second click): nothing is sent twice.
    page.reload()
    page.get_by_label("CSV file", exact=True).set_input_files(
        files=FilePayload(name="leads.csv", mimeType="text/csv", buffer=csv.encode())
    )
    expect(page.get_by_text("1 of 1 batches were sent before")).to_be_visible()
    expect(page.get_by_role("button", name="Add tasks")).to_be_disabled()
    assert len(api.get(f"/client/{tenant}/task_scheduler/{queue['id']}/task/").json()) == 2

    first = next(t for t in tasks if t["name"] == "first")
    row = page.get_by_role("row").filter(has_text="first")
    expect(row.get_by_text("finished")).to_be_visible()  # the list refreshes by itself
    snap(page, "queue")
    row.get_by_role("link", name=str(first["id"])).click()
    expect(page.get_by_role("heading", name=f"Task {first['id']}: first")).to_be_visible()
    record = page.get_by_role("article")
    expect(record).to_contain_text("Attempt 1: connected")
    cdr = api.get(f"/client/{tenant}/task_scheduler/{queue['id']}/task/{first['id']}").json()["cdr"]
    expect(record).to_contain_text(cdr)
    legs = page.get_by_role("list", name=f"Legs of call {cdr}")
    expect(legs).to_contain_text(re.compile(r"A \+\d+: answered · rang .* answered .* ended"))
    expect(legs).to_contain_text("hung up by")
    snap(page, "task")

    # Keyboard: the pages are reachable with Tab, and links open with Enter.
    page.get_by_role("link", name="← Queue").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="leads", level=1)).to_be_focused()


def test_the_link_make_run_prints_signs_in_and_takes_the_token_out_of_the_address(
    stack: Stack, page: Page, tenant: str
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(f"{stack.rest_url}/console/#token={stack.token(tenant)}")
    expect(page.get_by_role("heading", name="Queues", level=1)).to_be_visible()
    assert "token" not in page.url
    expect(page.get_by_role("button", name="Create queue")).to_be_in_viewport()
    snap(page, "phone")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Bearer token")).to_be_focused()


def test_envoy_serves_the_console_with_a_strict_policy_and_no_way_past_the_token(
    stack: Stack,
) -> None:
    with httpx.Client(base_url=stack.rest_url) as web:
        index = web.get("/console/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in index.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
        assert index.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/console/app.js">' in index.text
        script = web.get("/console/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert web.get("/console").headers["location"].endswith("/console/")
        assert web.get("/console/missing.js").status_code == 404
        assert web.get("/client/@me/task_scheduler/").status_code == 401
    # Nothing under /console reaches the api: paths sent as written (http.client does not
    # resolve dot segments, as httpx and browsers do) get Envoy's 404, never the API.
    host, port = stack.rest_url.removeprefix("http://").split(":")
    for sneaky in (
        "/console/../client/@me/task_scheduler/",
        "/console/%2e%2e/client/@me/task_scheduler/",
        "/console//client/@me/task_scheduler/",
        "/console/app.js/../../client/@me/task_scheduler/",
    ):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("GET", sneaky)
            response = connection.getresponse()
            assert response.status == 404, sneaky
            assert response.getheader("content-type", "").startswith("text/plain"), sneaky
            response.read()
        finally:
            connection.close()


def test_a_queues_tasks_page_by_page_by_status_and_its_settings_edited(
    stack: Stack, page: Page, api: httpx.Client, tenant: str
) -> None:
    created = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "later"}).json()
    queue = f"/client/{tenant}/task_scheduler/{created['id']}"
    later = {"a_number": "101", "b_number": "102", "start_time_utc": "2099-01-01 00:00:00"}
    tasks = api.post(f"{queue}/tasks/", json={"tasks": [later] * 120}).json()
    page.goto(f"{stack.rest_url}/console/#token={stack.token(tenant)}")
    page.get_by_role("link", name="later").click()
    tasks_section = page.get_by_role("region", name="Tasks")
    pager = tasks_section.get_by_text(re.compile(r"^page \d"))
    expect(pager).to_have_text("page 1, 50 task(s)")
    tasks_section.get_by_role("button", name="Next page").click()
    expect(pager).to_have_text("page 2, 50 task(s)")
    expect(tasks_section.get_by_role("link").first).to_have_text(str(tasks[50]["id"]))
    tasks_section.get_by_role("button", name="Next page").click()
    expect(pager).to_have_text("page 3, 20 task(s)")
    expect(tasks_section.get_by_role("button", name="Next page")).to_be_disabled()
    tasks_section.get_by_role("button", name="Previous page").click()
    expect(pager).to_have_text("page 2, 50 task(s)")
    tasks_section.get_by_label("Status").select_option("finished")
    expect(tasks_section.get_by_text("No tasks.")).to_be_visible()
    tasks_section.get_by_label("Status").select_option("scheduled")
    expect(pager).to_have_text("page 1, 50 task(s)")

    page.get_by_label("Comment").fill("edited")
    page.get_by_label("Concurrent task limit").fill("9")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Queue later saved.")
    saved = api.get(queue).json()
    assert (saved["comment"], saved["concurrent_task_limit"], saved["status"]) == (
        "edited",
        9,
        "off",
    )

    # The status switch of the queue list, with the keyboard.
    page.get_by_role("link", name="← Queues").click()
    switch = page.get_by_role("switch", name="Queue later on")
    switch.focus()
    page.keyboard.press("Space")
    expect(page.get_by_role("status")).to_have_text("Queue later switched on.")
    assert api.get(queue).json()["status"] == "on"


def test_an_upload_whose_answer_was_lost_resumes_after_a_reload_without_doubling(
    stack: Stack, page: Page, api: httpx.Client, tenant: str
) -> None:
    created = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "big"}).json()
    queue = f"/client/{tenant}/task_scheduler/{created['id']}"
    rows = 2500  # three bulk adds
    csv = "name,a_number,b_number\n" + "".join(f"lead {i},+1555{i:07d},101\n" for i in range(rows))
    upload = FilePayload(name="big.csv", mimeType="text/csv", buffer=csv.encode())
    posts: list[str] = []

    def lose_the_second_answer(route: Route) -> None:
        """The second bulk add reaches the API, which commits it; its answer is lost."""
        posts.append(route.request.headers["idempotency-key"])
        answer = route.fetch()
        if len(posts) == 2:
            assert answer.status == 200
            route.abort("connectionreset")
        else:
            route.fulfill(response=answer)

    page.route(re.compile(r".*/tasks/$"), lose_the_second_answer)
    page.goto(f"{stack.rest_url}/console/#token={stack.token(tenant)}")
    page.get_by_role("link", name="big").click()
    page.get_by_label("CSV file", exact=True).set_input_files(files=upload)
    page.get_by_role("button", name="Add tasks").click()
    expect(page.get_by_role("status")).to_contain_text("Failed to fetch")
    assert len(posts) == 2
    assert len(all_tasks(api, queue)) == 2000  # the batch whose answer was lost is in

    page.unroute(re.compile(r".*/tasks/$"))
    page.reload()
    page.get_by_label("CSV file", exact=True).set_input_files(files=upload)
    expect(page.get_by_text("1 of 3 batches were sent before")).to_be_visible()
    with page.expect_request(re.compile(r".*/tasks/$")) as resent:
        page.get_by_role("button", name="Add tasks").click()
    assert resent.value.headers["idempotency-key"] == posts[1]  # the same key: replayed
    expect(page.get_by_text(f"{rows:,} of {rows:,} rows added; 0 rejected.")).to_be_visible()
    tasks = all_tasks(api, queue)
    assert len(tasks) == rows
    assert sorted(t["name"] for t in tasks) == sorted(f"lead {i}" for i in range(rows))


def test_tasks_held_by_the_window_and_by_the_limit_and_the_newest_fields(
    stack: Stack, page: Page, api: httpx.Client, tenant: str
) -> None:
    interval = api.post(
        f"/client/{tenant}/interval/",
        json={
            "name": "office hours",
            "timezone": "Europe/Berlin",
            "conditions": [
                {"start_datetime": "2020-01-01 00:00:00", "end_datetime": "2020-01-02 00:00:00"}
            ],  # over for good: its queue's due tasks wait
        },
    ).json()
    created = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "windowed"}).json()
    windowed = f"/client/{tenant}/task_scheduler/{created['id']}"
    api.put(windowed, json={"interval_id": interval["id"], "status": "on"}).raise_for_status()

    page.goto(f"{stack.rest_url}/console/#token={stack.token(tenant)}")
    page.get_by_role("link", name="windowed").click()
    expect(page.get_by_label("Calling window")).to_have_text(
        "Calling window: office hours (Europe/Berlin)"
    )
    csv = (
        "name,a_number,b_number,try_count_caller,try_again_pause_caller,timezone\n"
        f"zoned,{ANSWERING_NUMBER},{ANSWERING_NUMBER},2,600,America/New_York\n"
        f"mars,{ANSWERING_NUMBER},{ANSWERING_NUMBER},,,Mars/Olympus\n"
        f"words,{ANSWERING_NUMBER},{ANSWERING_NUMBER},two,,\n"
    )
    page.get_by_label("CSV file", exact=True).set_input_files(
        files=FilePayload(name="newest.csv", mimeType="text/csv", buffer=csv.encode())
    )
    page.get_by_role("button", name="Add tasks").click()
    expect(page.get_by_text("1 of 3 rows added; 2 rejected.")).to_be_visible()
    rejected = page.get_by_role("table").filter(has_text="Rejected rows")
    expect(rejected).to_contain_text("callback_params.timezone: must be an IANA time zone name")
    expect(rejected).to_contain_text("try_count_caller: must be a whole number, got 'two'")
    (zoned,) = all_tasks(api, windowed)
    assert (zoned["try_count_caller"], zoned["try_again_pause_caller"]) == (2, 600)
    assert zoned["callback_params"]["timezone"] == "America/New_York"

    # Held by the window: the filter finds it, and the list shows it as such.
    tasks_section = page.get_by_role("region", name="Tasks")
    tasks_section.get_by_label("Status").select_option("delayed_interval")
    expect(tasks_section.get_by_role("link", name=str(zoned["id"]))).to_be_visible()
    expect(page.get_by_text("held by the window 1")).to_be_visible()
    tasks_section.get_by_role("link", name=str(zoned["id"])).click()
    details = page.locator("dl.fields").first
    expect(details).to_contain_text("delayed_interval held by the calling window")
    expect(details).to_contain_text("up to 2 failures at A, 600 s apart")
    expect(details).to_contain_text("America/New_York")

    # Held by the limit: a client allowed no callback in progress, a due task of a queue
    # switched on.
    stack.admin("set", tenant, "--max-in-progress", "0")
    limited = api.post(
        f"/client/{tenant}/task_scheduler/", json={"name": "limited", "status": "on"}
    ).json()
    api.post(
        f"/client/{tenant}/task_scheduler/{limited['id']}/tasks/",
        json={"tasks": [{"a_number": ANSWERING_NUMBER, "b_number": ANSWERING_NUMBER}]},
    ).raise_for_status()
    page.get_by_role("link", name="← Queue").click()
    page.get_by_role("link", name="← Queues").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="limited"))
    columns = [
        page.get_by_role("columnheader").nth(i).inner_text()
        for i in range(page.get_by_role("columnheader").count())
    ]
    held_by_limit = columns.index("Held (limit)")
    expect(row.get_by_role("cell").nth(held_by_limit)).to_have_text("1")
    expect(row.get_by_role("cell").nth(columns.index("Calling window"))).to_have_text(
        "none (always open)"
    )
    windowed_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="windowed"))
    expect(windowed_row.get_by_role("cell").nth(columns.index("Held (window)"))).to_have_text("1")
    expect(windowed_row.get_by_role("cell").nth(columns.index("Calling window"))).to_have_text(
        "office hours (Europe/Berlin)"
    )
