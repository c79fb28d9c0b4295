"""Unknown JSON fields through the real REST gateway: a 400 naming the field (inside
callback_params, inside a bulk add's tasks, inside an interval's conditions), nothing stored;
every documented field, and a PUT that sends back what a GET answered, still accepted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from deploy.envoy.body_fields import DESCRIPTION

TASK: dict[str, Any] = {"a_number": "+79990001122", "b_number": "101"}
CONDITION = {"start_time": "09:00:00", "end_time": "18:00:00"}


def assert_unknown_field(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 3
    assert body["message"] == f"invalid request: {field}: {DESCRIPTION}"
    info, bad_request = body["details"]
    assert info["reason"] == "INVALID_INPUT"
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in bad_request["field_violations"]] == [field]


def queue_path(api: httpx.Client, tenant: str) -> str:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "q"})
    assert response.status_code == 200, response.text
    return f"/client/{tenant}/task_scheduler/{response.json()['id']}"


def tasks_of(api: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = api.get(f"{path}/task/")
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def test_unknown_queue_field_is_refused(api: httpx.Client, tenant: str) -> None:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "q", "stauts": "on"})
    assert_unknown_field(response, "stauts")
    queues = api.get(f"/client/{tenant}/task_scheduler/").json()
    assert queues == []


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ([TASK | {"try_cuont": 3}], "tasks[0].try_cuont"),
        (
            [TASK, TASK | {"callback_params": {"ring_timout": 10}}],
            "tasks[1].callback_params.ring_timout",
        ),
        # A key spelt with a JSON escape is the key it spells ("\u0061" is "a").
        (
            [TASK | {"callback_params": {"caller_id_nam\\u0065": "x", "\\u0078": 1}}],
            "tasks[0].callback_params.x",
        ),
    ],
)
def test_unknown_task_field_is_refused(
    api: httpx.Client, tenant: str, tasks: list[dict[str, Any]], field: str
) -> None:
    path = queue_path(api, tenant)
    body = httpx.Request("POST", "http://x", json={"tasks": tasks}).content.replace(
        b"\\\\u", b"\\u"
    )
    response = api.post(
        f"{path}/tasks/", content=body, headers={"content-type": "application/json"}
    )
    assert_unknown_field(response, field)
    assert tasks_of(api, path) == []


def test_unknown_top_level_field_of_a_bulk_add(api: httpx.Client, tenant: str) -> None:
    path = queue_path(api, tenant)
    response = api.post(f"{path}/tasks", json={"tasks": [TASK], "dry_run": True})
    assert_unknown_field(response, "dry_run")


def test_unknown_fields_of_updates_and_intervals(api: httpx.Client, tenant: str) -> None:
    path = queue_path(api, tenant)
    assert_unknown_field(api.put(path, json={"statuss": "on"}), "statuss")
    [task] = api.post(f"{path}/tasks/", json={"tasks": [TASK]}).json()
    task_path = f"{path}/task/{task['id']}"
    assert_unknown_field(
        api.put(task_path, json={"callback_params": {"call_duraton": 5}}),
        "callback_params.call_duraton",
    )
    intervals = f"/client/{tenant}/interval/"
    response = api.post(
        intervals, json={"timezone": "UTC", "conditions": [CONDITION, CONDITION | {"dow": 2}]}
    )
    assert_unknown_field(response, "conditions[1].dow")
    assert api.get(intervals).json() == []


def test_every_documented_field_is_still_accepted(api: httpx.Client, tenant: str) -> None:
    path = queue_path(api, tenant)
    documented = TASK | {
        "name": "lead",
        "extension_id": 0,
        "try_count": 2,
        "try_again_pause": "60",
        "url_before": "https://example.com/b",
        "url_before_again": "https://example.com/ba",
        "url_success": "https://example.com/s",
        "url_after": "https://example.com/a",
        "start_time_utc": "2030-01-01 09:00:00",
        "callback_params": {
            "caller_id_name": "Sales",
            "caller_id_number": "",
            "extended_a_numbers": ["102"],
            "call_duration": 60,
            "ring_timeout": 20,
        },
    }
    response = api.post(f"{path}/tasks/", json={"tasks": [documented]})
    assert response.status_code == 200, response.text
    # Values of any shape inside a field that takes any JSON value (try_again_pause) are the
    # field's own business (a 400 of the api, not an unknown field).
    response = api.post(f"{path}/tasks/", json={"tasks": [TASK | {"try_again_pause": {"x": 1}}]})
    assert response.status_code == 400
    assert "unknown field" not in response.text


def test_a_put_may_send_back_what_a_get_answered(api: httpx.Client, tenant: str) -> None:
    # The published PUT of a queue lists the queue's own fields (name, id, create_date_utc)
    # as its "Request field": sending the object back is read-modify-write, not an error.
    path = queue_path(api, tenant)
    queue = api.get(path).json()
    response = api.put(path, json=queue | {"comment": "changed"})
    assert response.status_code == 200, response.text
    assert response.json()["comment"] == "changed"
    assert response.json()["name"] == "q"  # fixed at creation: ignored, as before
    [task] = api.post(f"{path}/tasks/", json={"tasks": [TASK]}).json()
    task_path = f"{path}/task/{task['id']}"
    response = api.put(task_path, json=task | {"try_count": 3})
    assert response.status_code == 200, response.text
    assert response.json()["try_count"] == 3


def test_malformed_json_is_still_the_transcoders_400(api: httpx.Client, tenant: str) -> None:
    path = queue_path(api, tenant)
    response = api.post(
        f"{path}/tasks/",
        content=b'{"tasks": [{"a_number": "1", "zzz": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "unknown field" not in response.text
