"""Queues (`task_scheduler`) through the real REST gateway: every endpoint, field by field."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from deploy.local.stack import Stack
from tests.support.database import db_now
from tests.support.wire_times import stamped_between

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
QUEUE_FIELDS = {
    "id",
    "name",
    "comment",
    "status",
    "concurrent_task_limit",
    "create_date_utc",
    "interval_id",
    "sched_task_count",
    "task_count",
    "last_call_date",
}
TASK = {"a_number": "+79990001122", "b_number": "101"}


def is_int(value: object) -> bool:
    """A JSON number that is an integer (bool is not, and neither is a string of digits)."""
    return type(value) is int


def create_queue(api: httpx.Client, tenant: str, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/client/{tenant}/task_scheduler/", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert is_int(body["code"])
    assert isinstance(body["message"], str) and body["message"]


# --- create ------------------------------------------------------------------------------------


def test_create_queue_has_published_fields_and_defaults(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    before = db_now(stack)
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "sales"})
    after = db_now(stack)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    queue = response.json()
    assert set(queue) == QUEUE_FIELDS
    assert is_int(queue["id"]) and queue["id"] > 0
    assert queue["name"] == "sales"
    assert queue["comment"] == ""
    assert queue["status"] == "off"
    assert is_int(queue["concurrent_task_limit"]) and queue["concurrent_task_limit"] == 1
    assert WIRE_TIME.fullmatch(queue["create_date_utc"])
    assert stamped_between(queue["create_date_utc"], before, after)


def test_create_queue_echoes_every_field(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(
        api, tenant, name="night shift", comment="after 9pm", status="on", concurrent_task_limit=7
    )

    assert queue["name"] == "night shift"
    assert queue["comment"] == "after 9pm"
    assert queue["status"] == "on"
    assert queue["concurrent_task_limit"] == 7


def test_create_queue_with_empty_body_takes_defaults(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)

    assert {k: queue[k] for k in ("name", "comment", "status", "concurrent_task_limit")} == {
        "name": "",
        "comment": "",
        "status": "off",
        "concurrent_task_limit": 1,
    }


def test_create_queue_string_fields_are_strings(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, name="123", comment="456")

    for field in ("name", "comment", "status", "create_date_utc"):
        assert isinstance(queue[field], str), field
    assert queue["name"] == "123" and queue["comment"] == "456"


def test_each_queue_gets_its_own_id(api: httpx.Client, tenant: str) -> None:
    first, second = create_queue(api, tenant), create_queue(api, tenant)

    assert first["id"] != second["id"]


# --- get / list --------------------------------------------------------------------------------


def test_get_queue_returns_what_create_returned(api: httpx.Client, tenant: str) -> None:
    created = create_queue(api, tenant, name="q", comment="c", concurrent_task_limit=3)

    response = api.get(f"/client/{tenant}/task_scheduler/{created['id']}")

    assert response.status_code == 200, response.text
    assert response.json() == created


def test_get_unknown_queue_is_404(api: httpx.Client, tenant: str) -> None:
    assert_error(api.get(f"/client/{tenant}/task_scheduler/4000000000"), 404)


def test_list_of_a_new_tenant_is_an_empty_array(api: httpx.Client, tenant: str) -> None:
    response = api.get(f"/client/{tenant}/task_scheduler/")

    assert response.status_code == 200, response.text
    assert response.json() == []


def test_list_queues_is_a_bare_array_by_id(api: httpx.Client, tenant: str) -> None:
    created = [create_queue(api, tenant, name=f"q{i}") for i in range(3)]

    listed = api.get(f"/client/{tenant}/task_scheduler/").json()

    assert isinstance(listed, list)
    assert listed == sorted(created, key=lambda q: q["id"])


# --- update ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"comment": "new comment"},
        {"comment": ""},
        {"status": "on"},
        {"concurrent_task_limit": 9},
        {"status": "on", "concurrent_task_limit": 2},
        {"comment": "all", "status": "on", "concurrent_task_limit": 4},
    ],
)
def test_put_changes_only_the_fields_sent(
    api: httpx.Client, tenant: str, change: dict[str, Any]
) -> None:
    before = create_queue(api, tenant, name="n", comment="c", status="off", concurrent_task_limit=3)

    response = api.put(f"/client/{tenant}/task_scheduler/{before['id']}", json=change)

    assert response.status_code == 200, response.text
    assert response.json() == before | change
    assert api.get(f"/client/{tenant}/task_scheduler/{before['id']}").json() == before | change


def test_put_can_switch_a_queue_off_again(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant, status="on")

    response = api.put(f"/client/{tenant}/task_scheduler/{queue['id']}", json={"status": "off"})

    assert response.json()["status"] == "off"


def test_put_with_empty_body_changes_nothing(api: httpx.Client, tenant: str) -> None:
    before = create_queue(api, tenant, name="n", comment="c", concurrent_task_limit=3)

    response = api.put(f"/client/{tenant}/task_scheduler/{before['id']}", json={})

    assert response.status_code == 200, response.text
    assert response.json() == before


def test_put_never_changes_the_name(api: httpx.Client, tenant: str) -> None:
    before = create_queue(api, tenant, name="original")

    response = api.put(f"/client/{tenant}/task_scheduler/{before['id']}", json={"name": "renamed"})

    # Refusing the field (400) or ignoring it (200) are both fine; renaming is not.
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert response.json()["name"] == "original"
    assert api.get(f"/client/{tenant}/task_scheduler/{before['id']}").json() == before


def test_put_unknown_queue_is_404(api: httpx.Client, tenant: str) -> None:
    response = api.put(f"/client/{tenant}/task_scheduler/4000000000", json={"status": "on"})

    assert_error(response, 404)


# --- delete ------------------------------------------------------------------------------------


def test_delete_queue_answers_empty_object_then_404(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, tenant)
    path = f"/client/{tenant}/task_scheduler/{queue['id']}"

    first = api.delete(path)
    assert first.status_code == 200, first.text
    assert first.json() == {}

    assert_error(api.delete(path), 404)
    assert_error(api.get(path), 404)
    assert_error(api.put(path, json={"status": "on"}), 404)


def test_deleted_queue_leaves_the_list_and_others_stay(api: httpx.Client, tenant: str) -> None:
    kept, gone = create_queue(api, tenant, name="kept"), create_queue(api, tenant, name="gone")

    api.delete(f"/client/{tenant}/task_scheduler/{gone['id']}")

    assert api.get(f"/client/{tenant}/task_scheduler/").json() == [kept]


def test_delete_queue_removes_its_tasks(api: httpx.Client, tenant: str) -> None:
    queue, other = create_queue(api, tenant), create_queue(api, tenant)
    base, other_base = (f"/client/{tenant}/task_scheduler/{q['id']}" for q in (queue, other))
    tasks = api.post(f"{base}/tasks/", json={"tasks": [TASK, TASK]}).json()
    other_tasks = api.post(f"{other_base}/tasks/", json={"tasks": [TASK]}).json()

    assert api.delete(base).status_code == 200

    for task in tasks:
        assert_error(api.get(f"{base}/task/{task['id']}"), 404)
        assert_error(api.delete(f"{base}/task/{task['id']}"), 404)
    assert_error(api.get(f"{base}/task/"), 404)
    assert_error(api.post(f"{base}/tasks/", json={"tasks": [TASK]}), 404)
    assert api.get(f"{other_base}/task/").json() == other_tasks


# --- path forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
@pytest.mark.parametrize("as_me", [False, True], ids=["client-id", "at-me"])
def test_every_queue_endpoint_in_every_path_form(
    api: httpx.Client, tenant: str, slash: str, as_me: bool
) -> None:
    base = f"/client/{'@me' if as_me else tenant}/task_scheduler"

    created = api.post(base + slash, json={"name": "form"})
    assert created.status_code == 200, created.text
    queue = created.json()
    one = f"{base}/{queue['id']}{slash}"

    listed = api.get(base + slash)
    assert listed.status_code == 200, listed.text
    assert listed.json() == [queue]

    got = api.get(one)
    assert got.status_code == 200, got.text
    assert got.json() == queue

    updated = api.put(one, json={"comment": "via " + one})
    assert updated.status_code == 200, updated.text
    assert updated.json() == queue | {"comment": "via " + one}

    deleted = api.delete(one)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {}
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == []


def test_at_me_and_client_id_name_the_same_queues(api: httpx.Client, tenant: str) -> None:
    queue = create_queue(api, "@me", name="made via @me")

    assert api.get(f"/client/{tenant}/task_scheduler/{queue['id']}").json() == queue
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == [queue]
