"""Tasks through the real REST gateway: bulk add, get, list, delete, and their wire format."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from deploy.local.stack import Stack
from tests.support.database import db_now
from tests.support.wire_times import stamped_between

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
TASK_FIELDS = {
    "id", "name", "status", "a_number", "b_number", "extension_id", "scheduler_id",
    "finish_result", "cdr", "try_count", "try_again_pause", "start_time_utc", "url_before",
    "url_before_again", "url_after", "url_success", "create_date_utc", "finish_comment",
    "callback_params", "try_count_caller", "try_again_pause_caller",
}  # fmt: skip
INT_FIELDS = (
    "id", "extension_id", "scheduler_id", "try_count", "try_count_caller",
    "try_again_pause_caller",
)  # fmt: skip
STR_FIELDS = tuple(sorted(TASK_FIELDS - {*INT_FIELDS, "callback_params"}))
TASK = {"a_number": "+79990001122", "b_number": "101"}
FULL_TASK: dict[str, Any] = {
    "name": "call back Ivan",
    "a_number": "+79990001122",
    "b_number": "*21#",
    "extension_id": 42,
    "try_count": 5,
    "try_again_pause": "90",
    "try_count_caller": 3,
    "try_again_pause_caller": 864000,
    "url_before": "https://hooks.example.com/before?sig=AbC&x=1",
    "url_before_again": "http://hooks.example.com:8080/again",
    "url_success": "https://hooks.example.com/success",
    "url_after": "https://Hooks.Example.com",
    "start_time_utc": "2030-01-02 03:04:05",
    "callback_params": {
        "caller_id_name": "Support",
        "caller_id_number": "+74950000000",
        "extended_a_numbers": ["+79990001123", "102"],
        "call_duration": 120,
        "ring_timeout": 25,
        "timezone": "America/Chicago",
    },
}


@pytest.fixture
def owner(stack: Stack, tenant: str) -> str:
    """The test's tenant, onboarded with what FULL_TASK uses: extension 42's SIP account and
    its caller ids (a tenant nobody configured may use neither)."""
    stack.admin("set", tenant, "--caller-id", "+74950000000", "--caller-id", "+1555")
    stack.admin("account", "add", tenant, "42", "--username", "ext42", "--password", "pw")
    return tenant


def is_int(value: object) -> bool:
    return type(value) is int


def new_queue(api: httpx.Client, tenant: str) -> str:
    """A fresh (switched off) queue; returns its base path."""
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "tasks"})
    assert response.status_code == 200, response.text
    return f"/client/{tenant}/task_scheduler/{response.json()['id']}"


def add(api: httpx.Client, queue: str, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
    response = api.post(f"{queue}/tasks/", json={"tasks": list(tasks)})
    assert response.status_code == 200, response.text
    created: list[dict[str, Any]] = response.json()
    return created


def add_one(api: httpx.Client, queue: str, **fields: Any) -> dict[str, Any]:
    return add(api, queue, TASK | fields)[0]


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert is_int(body["code"])
    assert isinstance(body["message"], str) and body["message"]


# --- bulk create -------------------------------------------------------------------------------


def test_add_answers_a_bare_array_in_input_order(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    sent = [TASK | {"name": f"t{i}", "a_number": f"{100 + i}"} for i in (3, 1, 2)]

    response = api.post(f"{queue}/tasks/", json={"tasks": sent})

    assert response.status_code == 200, response.text
    created = response.json()
    assert isinstance(created, list)
    assert [t["name"] for t in created] == ["t3", "t1", "t2"]
    assert [t["a_number"] for t in created] == ["103", "101", "102"]
    assert len({t["id"] for t in created}) == 3


def test_new_task_has_published_fields_and_defaults(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    scheduler_id = int(queue.rsplit("/", 1)[1])

    task = add_one(api, queue)

    assert set(task) == TASK_FIELDS
    assert is_int(task["id"]) and task["id"] > 0
    assert task["scheduler_id"] == scheduler_id
    assert task["status"] == "scheduled"
    assert task["a_number"] == TASK["a_number"]
    assert task["b_number"] == TASK["b_number"]
    assert task["name"] == ""
    assert task["extension_id"] == 0
    assert task["try_count"] == 1
    assert task["try_again_pause"] == "60"
    # Retries of the A leg are off unless asked for: only try_count counts.
    assert (task["try_count_caller"], task["try_again_pause_caller"]) == (0, 0)
    assert task["finish_result"] == ""
    assert task["finish_comment"] == ""
    assert task["cdr"] == ""
    for url in ("url_before", "url_before_again", "url_success", "url_after"):
        assert task[url] == "", url
    assert task["callback_params"] == {
        "caller_id_name": "",
        "caller_id_number": "",
        "extended_a_numbers": [],
        "call_duration": 0,
        "ring_timeout": 0,
        "timezone": "",
    }


def test_absent_start_time_means_now(stack: Stack, api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    before = db_now(stack)
    task = add_one(api, queue)
    after = db_now(stack)

    assert WIRE_TIME.fullmatch(task["start_time_utc"])
    assert stamped_between(task["start_time_utc"], before, after)
    assert WIRE_TIME.fullmatch(task["create_date_utc"])
    assert stamped_between(task["create_date_utc"], before, after)


def test_every_field_round_trips(api: httpx.Client, owner: str) -> None:
    task = add(api, new_queue(api, owner), FULL_TASK)[0]

    # URLs come back exactly as sent (receivers may sign or compare them).
    assert {k: task[k] for k in FULL_TASK} == FULL_TASK
    assert task["status"] == "scheduled"


def test_wire_types_are_numbers_and_strings(api: httpx.Client, owner: str) -> None:
    task = add(api, new_queue(api, owner), FULL_TASK)[0]

    for field in INT_FIELDS:
        assert is_int(task[field]), field
    for field in STR_FIELDS:
        assert isinstance(task[field], str), field
    params = task["callback_params"]
    assert isinstance(params["caller_id_name"], str)
    assert isinstance(params["caller_id_number"], str)
    assert all(isinstance(n, str) for n in params["extended_a_numbers"])


@pytest.mark.parametrize(
    ("sent", "returned"),
    [(30, "30"), ("30", "30"), (0, "0"), ("0", "0"), (86400, "86400"), (60, "60")],
)
def test_try_again_pause_is_a_number_or_string_and_returned_as_string(
    api: httpx.Client, tenant: str, sent: int | str, returned: str
) -> None:
    task = add_one(api, new_queue(api, tenant), try_again_pause=sent)

    assert task["try_again_pause"] == returned


@pytest.mark.parametrize("try_count", [1, 2, 50])
def test_try_count_range_is_accepted(api: httpx.Client, tenant: str, try_count: int) -> None:
    assert add_one(api, new_queue(api, tenant), try_count=try_count)["try_count"] == try_count


@pytest.mark.parametrize(
    ("sent", "returned"),
    [
        ("2030-01-02 03:04:05", "2030-01-02 03:04:05"),
        ("2030-01-02 03:04", "2030-01-02 03:04:00"),
        ("2024-02-29 23:59:59", "2024-02-29 23:59:59"),
        # In the past: accepted, it means "as soon as the queue allows".
        ("2020-01-01 00:00:00", "2020-01-01 00:00:00"),
    ],
)
def test_start_time_is_echoed_in_wire_format(
    api: httpx.Client, tenant: str, sent: str, returned: str
) -> None:
    task = add_one(api, new_queue(api, tenant), start_time_utc=sent)

    assert task["start_time_utc"] == returned


@pytest.mark.parametrize("sent", ["0001-01-01 00:00:00", "0999-12-31 23:59"])
def test_a_start_time_before_1970_is_refused(api: httpx.Client, tenant: str, sent: str) -> None:
    response = api.post(
        f"{new_queue(api, tenant)}/tasks/", json={"tasks": [TASK | {"start_time_utc": sent}]}
    )

    assert_error(response, 400)
    assert "start_time_utc" in response.text


def test_callback_params_round_trip(api: httpx.Client, owner: str) -> None:
    params = {
        "caller_id_name": "Shop",
        "caller_id_number": "+1555",
        "extended_a_numbers": ["201", "+79990001124", "#7"],
        "call_duration": 0,
        "ring_timeout": 0,
        "timezone": "",
    }

    task = add_one(api, new_queue(api, owner), callback_params=params)

    assert task["callback_params"] == params


def test_partial_callback_params_fill_the_rest(api: httpx.Client, tenant: str) -> None:
    task = add_one(api, new_queue(api, tenant), callback_params={"caller_id_name": "Shop"})

    assert task["callback_params"] == {
        "caller_id_name": "Shop",
        "caller_id_number": "",
        "extended_a_numbers": [],
        "call_duration": 0,
        "ring_timeout": 0,
        "timezone": "",
    }


def test_add_to_unknown_queue_is_404(api: httpx.Client, tenant: str) -> None:
    response = api.post(
        f"/client/{tenant}/task_scheduler/4000000000/tasks/", json={"tasks": [TASK]}
    )

    assert_error(response, 404)


# --- bulk all-or-nothing -----------------------------------------------------------------------


def test_a_thousand_tasks_in_one_request(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    sent = [TASK | {"a_number": str(1000 + i)} for i in range(1000)]

    created = add(api, queue, *sent)

    assert [t["a_number"] for t in created] == [t["a_number"] for t in sent]
    listed = api.get(f"{queue}/task/").json()
    assert len(listed) == 1000
    assert {t["id"] for t in listed} == {t["id"] for t in created}


def test_one_bad_task_among_a_thousand_stores_none(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    sent = [TASK | {"a_number": str(1000 + i)} for i in range(1000)]
    sent[500] = TASK | {"b_number": "not a phone"}

    response = api.post(f"{queue}/tasks/", json={"tasks": sent})

    assert_error(response, 400)
    assert "tasks[500].b_number" in response.text
    assert "tasks[499]" not in response.text and "tasks[501]" not in response.text
    assert api.get(f"{queue}/task/").json() == []


def test_every_bad_task_of_a_bulk_add_is_reported(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    sent = [TASK, TASK | {"a_number": "x"}, TASK, TASK | {"try_count": 0}]

    response = api.post(f"{queue}/tasks/", json={"tasks": sent})

    assert_error(response, 400)
    assert "tasks[1].a_number" in response.text
    assert "tasks[3].try_count" in response.text
    assert api.get(f"{queue}/task/").json() == []


# --- get / list / delete -----------------------------------------------------------------------


def test_get_task_returns_what_add_returned(api: httpx.Client, owner: str) -> None:
    queue = new_queue(api, owner)
    created = add(api, queue, FULL_TASK)[0]

    response = api.get(f"{queue}/task/{created['id']}")

    assert response.status_code == 200, response.text
    assert response.json() == created


def test_list_tasks_is_a_bare_array_by_id(api: httpx.Client, owner: str) -> None:
    queue = new_queue(api, owner)
    created = add(api, queue, TASK, FULL_TASK, TASK | {"name": "third"})

    response = api.get(f"{queue}/task/")

    assert response.status_code == 200, response.text
    assert response.json() == sorted(created, key=lambda t: t["id"])


def test_list_tasks_of_an_empty_queue(api: httpx.Client, tenant: str) -> None:
    assert api.get(f"{new_queue(api, tenant)}/task/").json() == []


def test_list_tasks_shows_only_that_queues_tasks(api: httpx.Client, tenant: str) -> None:
    first, second = new_queue(api, tenant), new_queue(api, tenant)
    mine = add(api, first, TASK)
    add(api, second, TASK, TASK)

    assert api.get(f"{first}/task/").json() == mine


def test_list_tasks_of_unknown_queue_is_404(api: httpx.Client, tenant: str) -> None:
    assert_error(api.get(f"/client/{tenant}/task_scheduler/4000000000/task/"), 404)


def test_delete_task(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    gone, kept = add(api, queue, TASK, TASK | {"name": "kept"})

    response = api.delete(f"{queue}/task/{gone['id']}")

    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_error(api.get(f"{queue}/task/{gone['id']}"), 404)
    assert_error(api.delete(f"{queue}/task/{gone['id']}"), 404)
    assert api.get(f"{queue}/task/").json() == [kept]


def test_unknown_task_is_404(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)

    assert_error(api.get(f"{queue}/task/4000000000"), 404)
    assert_error(api.delete(f"{queue}/task/4000000000"), 404)


def test_a_task_is_only_found_under_its_own_queue(api: httpx.Client, tenant: str) -> None:
    home, elsewhere = new_queue(api, tenant), new_queue(api, tenant)
    task = add_one(api, home)

    assert_error(api.get(f"{elsewhere}/task/{task['id']}"), 404)
    assert_error(api.delete(f"{elsewhere}/task/{task['id']}"), 404)
    assert api.get(f"{home}/task/{task['id']}").json() == task


# --- path forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
@pytest.mark.parametrize("as_me", [False, True], ids=["client-id", "at-me"])
def test_every_task_endpoint_in_every_path_form(
    api: httpx.Client, tenant: str, slash: str, as_me: bool
) -> None:
    scheduler_id = new_queue(api, tenant).rsplit("/", 1)[1]
    queue = f"/client/{'@me' if as_me else tenant}/task_scheduler/{scheduler_id}"

    added = api.post(f"{queue}/tasks{slash}", json={"tasks": [TASK]})
    assert added.status_code == 200, added.text
    task = added.json()[0]
    one = f"{queue}/task/{task['id']}{slash}"

    listed = api.get(f"{queue}/task{slash}")
    assert listed.status_code == 200, listed.text
    assert listed.json() == [task]

    got = api.get(one)
    assert got.status_code == 200, got.text
    assert got.json() == task

    deleted = api.delete(one)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {}
    assert api.get(f"/client/{tenant}/task_scheduler/{scheduler_id}/task/").json() == []
