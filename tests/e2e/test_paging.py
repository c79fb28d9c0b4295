"""Paging of both list endpoints (`limit`, `after_id`) and the tasks' `status` filter."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

TASK = {"a_number": "+79990001122", "b_number": "101"}


def new_queue(api: httpx.Client, tenant: str) -> str:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={})
    assert response.status_code == 200, response.text
    return f"/client/{tenant}/task_scheduler/{response.json()['id']}"


def add_tasks(api: httpx.Client, queue: str, count: int) -> list[int]:
    """Add count tasks, 1000 per request; return their ids."""
    ids: list[int] = []
    while len(ids) < count:
        batch = [TASK | {"name": f"t{len(ids) + i}"} for i in range(min(1000, count - len(ids)))]
        response = api.post(f"{queue}/tasks/", json={"tasks": batch})
        assert response.status_code == 200, response.text
        ids += [task["id"] for task in response.json()]
    return ids


def ids_of(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    assert isinstance(items, list)
    return [item["id"] for item in items]


def assert_bad_request(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert field in response.json()["message"]


@pytest.fixture
def queues(api: httpx.Client, tenant: str) -> list[int]:
    """Five queues of this tenant, by id."""
    return [int(new_queue(api, tenant).rsplit("/", 1)[1]) for _ in range(5)]


@pytest.fixture
def queue_with_tasks(api: httpx.Client, tenant: str) -> tuple[str, list[int]]:
    """A queue with five tasks: its path and the task ids."""
    queue = new_queue(api, tenant)
    return queue, add_tasks(api, queue, 5)


# --- queues ------------------------------------------------------------------------------------


def test_queues_are_listed_by_id(api: httpx.Client, tenant: str, queues: list[int]) -> None:
    listed = ids_of(api.get(f"/client/{tenant}/task_scheduler/"))

    assert listed == sorted(queues)


def test_queue_pages_follow_after_id(api: httpx.Client, tenant: str, queues: list[int]) -> None:
    path = f"/client/{tenant}/task_scheduler/"

    assert ids_of(api.get(path, params={"limit": 2})) == queues[:2]
    assert ids_of(api.get(path, params={"limit": 2, "after_id": queues[1]})) == queues[2:4]
    assert ids_of(api.get(path, params={"limit": 2, "after_id": queues[3]})) == queues[4:]
    assert ids_of(api.get(path, params={"limit": 2, "after_id": queues[4]})) == []


def test_queue_after_id_alone_returns_the_rest(
    api: httpx.Client, tenant: str, queues: list[int]
) -> None:
    path = f"/client/{tenant}/task_scheduler"

    assert ids_of(api.get(path, params={"after_id": queues[2]})) == queues[3:]
    assert ids_of(api.get(path, params={"after_id": 0})) == queues


def test_queue_pages_are_the_same_items_as_the_page_body(
    api: httpx.Client, tenant: str, queues: list[int]
) -> None:
    path = f"/client/{tenant}/task_scheduler/"
    whole = api.get(path).json()

    paged = api.get(path, params={"limit": 3}).json()
    paged += api.get(path, params={"limit": 3, "after_id": paged[-1]["id"]}).json()

    assert paged == whole


def test_queue_pages_are_stable(api: httpx.Client, tenant: str, queues: list[int]) -> None:
    path = f"/client/{tenant}/task_scheduler/"

    pages = [api.get(path, params={"limit": 3, "after_id": queues[0]}).json() for _ in range(3)]

    assert pages[0] == pages[1] == pages[2]
    assert [q["id"] for q in pages[0]] == queues[1:4]


def test_deleting_a_queue_does_not_shift_later_pages(
    api: httpx.Client, tenant: str, queues: list[int]
) -> None:
    path = f"/client/{tenant}/task_scheduler/"
    api.delete(f"{path}{queues[1]}")

    assert ids_of(api.get(path, params={"limit": 2, "after_id": queues[0]})) == queues[2:4]


@pytest.mark.parametrize("limit", [1, 999, 1000])
def test_queue_limit_range(api: httpx.Client, tenant: str, queues: list[int], limit: int) -> None:
    listed = ids_of(api.get(f"/client/{tenant}/task_scheduler/", params={"limit": limit}))

    assert listed == queues[:limit]


# --- tasks -------------------------------------------------------------------------------------


def test_task_pages_follow_after_id(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]]
) -> None:
    queue, tasks = queue_with_tasks
    path = f"{queue}/task/"

    assert ids_of(api.get(path)) == sorted(tasks)
    assert ids_of(api.get(path, params={"limit": 2})) == tasks[:2]
    assert ids_of(api.get(path, params={"limit": 2, "after_id": tasks[1]})) == tasks[2:4]
    assert ids_of(api.get(path, params={"limit": 2, "after_id": tasks[3]})) == tasks[4:]
    assert ids_of(api.get(path, params={"after_id": tasks[4]})) == []


def test_task_pages_are_stable(api: httpx.Client, queue_with_tasks: tuple[str, list[int]]) -> None:
    queue, tasks = queue_with_tasks

    pages = [api.get(f"{queue}/task", params={"limit": 2, "after_id": tasks[0]}) for _ in range(3)]

    assert pages[0].json() == pages[1].json() == pages[2].json()
    assert ids_of(pages[0]) == tasks[1:3]


def test_task_pages_skip_deleted_tasks(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]]
) -> None:
    queue, tasks = queue_with_tasks
    api.delete(f"{queue}/task/{tasks[2]}")

    listed = ids_of(api.get(f"{queue}/task/", params={"limit": 2, "after_id": tasks[0]}))

    assert listed == [tasks[1], tasks[3]]


def test_task_pages_never_show_another_queues_tasks(api: httpx.Client, tenant: str) -> None:
    first, second = new_queue(api, tenant), new_queue(api, tenant)
    mine = add_tasks(api, first, 2)
    add_tasks(api, second, 2)
    mine += add_tasks(api, first, 2)

    assert ids_of(api.get(f"{first}/task/", params={"limit": 3})) == mine[:3]
    assert ids_of(api.get(f"{first}/task/", params={"after_id": mine[2]})) == mine[3:]


# --- status filter -----------------------------------------------------------------------------


def test_status_filter_scheduled_returns_new_tasks(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]]
) -> None:
    queue, tasks = queue_with_tasks

    listed = api.get(f"{queue}/task/", params={"status": "scheduled"})

    assert ids_of(listed) == tasks
    assert {task["status"] for task in listed.json()} == {"scheduled"}


@pytest.mark.parametrize("status", ["executed", "delayed", "finished"])
def test_status_filter_excludes_other_statuses(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]], status: str
) -> None:
    queue, _ = queue_with_tasks  # a switched-off queue: its tasks stay scheduled

    assert ids_of(api.get(f"{queue}/task/", params={"status": status})) == []


def test_status_filter_combines_with_paging(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]]
) -> None:
    queue, tasks = queue_with_tasks
    params: dict[str, str | int] = {"status": "scheduled", "limit": 2, "after_id": tasks[1]}

    assert ids_of(api.get(f"{queue}/task/", params=params)) == tasks[2:4]


@pytest.mark.parametrize("status", ["bad", "SCHEDULED", "on", "scheduled,finished"])
def test_bad_status_filter_is_400(
    api: httpx.Client, queue_with_tasks: tuple[str, list[int]], status: str
) -> None:
    queue, _ = queue_with_tasks

    assert_bad_request(api.get(f"{queue}/task/", params={"status": status}), "status")


# --- bad paging parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"after_id": -1}, "after_id"),
        ({"after_id": "abc"}, "after_id"),
    ],
)
@pytest.mark.parametrize("endpoint", ["queues", "tasks"])
def test_bad_paging_parameters_are_400(
    api: httpx.Client, tenant: str, params: dict[str, Any], field: str, endpoint: str
) -> None:
    queue = new_queue(api, tenant)
    path = f"/client/{tenant}/task_scheduler/" if endpoint == "queues" else f"{queue}/task/"

    assert_bad_request(api.get(path, params=params), field)


# --- the unpaged list is one page --------------------------------------------------------------


def test_unpaged_list_of_2500_tasks_is_the_first_1000_by_id(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    tasks = sorted(add_tasks(api, queue, 2500))

    assert ids_of(api.get(f"{queue}/task/")) == tasks[:1000]
    assert ids_of(api.get(f"{queue}/task/", params={"limit": 0})) == tasks[:1000]

    seen: list[int] = []
    while page := ids_of(api.get(f"{queue}/task/", params={"after_id": seen[-1] if seen else 0})):
        assert len(page) <= 1000
        seen += page
    assert seen == tasks
