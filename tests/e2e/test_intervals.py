"""Calling windows (`interval`) through the real REST gateway: CRUD, validation, tenant
isolation, and the queue's interval_id."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.test_queues import assert_error, create_queue, is_int
from tests.support.stacks import ClientFactory

INTERVAL_FIELDS = {"id", "name", "timezone", "conditions"}
CONDITION_FIELDS = {
    "start_time",
    "end_time",
    "start_dow",
    "end_dow",
    "start_mday",
    "end_mday",
    "month",
    "start_datetime",
    "end_datetime",
}
OFFICE = {
    "name": "office hours",
    "timezone": "Europe/Berlin",
    "conditions": [
        {"start_time": "09:00:00", "end_time": "18:00:00", "start_dow": 2, "end_dow": 6},
        {"start_time": "22:00:00", "end_time": "06:00:00", "start_dow": 6, "end_dow": 2},
        {"start_datetime": "2030-12-24 09:00", "end_datetime": "2030-12-24 12:00:00"},
    ],
}


def create_interval(api: httpx.Client, tenant: str, **fields: Any) -> dict[str, Any]:
    body = {"timezone": "UTC", "conditions": [{}], **fields}
    response = api.post(f"/client/{tenant}/interval/", json=body)
    assert response.status_code == 200, response.text
    interval: dict[str, Any] = response.json()
    return interval


def details(response: httpx.Response) -> tuple[str, set[str]]:
    """The ErrorInfo reason and the fields of the BadRequest violations."""
    items = response.json()["details"]
    reason = next(str(d["reason"]) for d in items if d["@type"].endswith("ErrorInfo"))
    fields = {
        str(v["field"])
        for d in items
        if d["@type"].endswith("BadRequest")
        for v in d["field_violations"]
    }
    return reason, fields


# --- CRUD --------------------------------------------------------------------------------------


def test_create_interval_answers_every_field(api: httpx.Client, tenant: str) -> None:
    interval = create_interval(api, tenant, **OFFICE)

    assert set(interval) == INTERVAL_FIELDS
    assert is_int(interval["id"]) and interval["id"] > 0
    assert interval["name"] == "office hours"
    assert interval["timezone"] == "Europe/Berlin"
    conditions = interval["conditions"]
    assert len(conditions) == 3
    assert all(set(c) == CONDITION_FIELDS for c in conditions)
    assert conditions[0] == {
        "start_time": "09:00:00",
        "end_time": "18:00:00",
        "start_dow": 2,
        "end_dow": 6,
        "start_mday": 0,
        "end_mday": 0,
        "month": 0,
        "start_datetime": "",
        "end_datetime": "",
    }
    # Seconds added where the client left them out.
    assert conditions[2]["start_datetime"] == "2030-12-24 09:00:00"
    assert conditions[2]["end_datetime"] == "2030-12-24 12:00:00"


def test_get_list_update_delete(api: httpx.Client, tenant: str) -> None:
    first = create_interval(api, tenant, **OFFICE)
    second = create_interval(api, tenant, name="second")

    assert api.get(f"/client/{tenant}/interval/{first['id']}").json() == first
    assert api.get(f"/client/{tenant}/interval").json() == [first, second]
    assert api.get(f"/client/{tenant}/interval/?limit=1").json() == [first]
    assert api.get(f"/client/{tenant}/interval/?after_id={first['id']}").json() == [second]

    # A partial update: the conditions stay when not sent...
    renamed = api.put(f"/client/{tenant}/interval/{first['id']}", json={"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**first, "name": "renamed"}
    # ...and [] keeps them too; sent, they are replaced as a whole.
    kept = api.put(f"/client/{tenant}/interval/{first['id']}", json={"conditions": []})
    assert kept.json()["conditions"] == first["conditions"]
    changed = api.put(
        f"/client/{tenant}/interval/{first['id']}",
        json={"timezone": "Asia/Tokyo", "conditions": [{"month": 12, "start_mday": 24}]},
    ).json()
    assert changed["timezone"] == "Asia/Tokyo"
    assert [(c["month"], c["start_mday"], c["end_mday"]) for c in changed["conditions"]] == [
        (12, 24, 0)
    ]
    assert api.get(f"/client/{tenant}/interval/{first['id']}").json() == changed

    deleted = api.delete(f"/client/{tenant}/interval/{first['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {}
    assert_error(api.get(f"/client/{tenant}/interval/{first['id']}"), 404)
    assert_error(api.delete(f"/client/{tenant}/interval/{first['id']}"), 404)
    assert_error(api.put(f"/client/{tenant}/interval/{first['id']}", json={"name": "x"}), 404)
    assert api.get(f"/client/{tenant}/interval/").json() == [second]


def test_at_me_names_the_same_intervals(api: httpx.Client, tenant: str) -> None:
    interval = create_interval(api, tenant)
    assert api.get(f"/client/@me/interval/{interval['id']}").json() == interval
    assert api.get("/client/@me/interval/").json() == [interval]


def test_create_is_idempotent_with_a_key(api: httpx.Client, tenant: str) -> None:
    key = str(uuid.uuid4())
    body = {"timezone": "UTC", "conditions": [{"start_time": "08:00:00"}]}
    first = api.post(f"/client/{tenant}/interval/", json=body, headers={"Idempotency-Key": key})
    again = api.post(f"/client/{tenant}/interval/", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.get(f"/client/{tenant}/interval/").json()) == 1


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"conditions": [{}]}, "timezone"),
        ({"timezone": "Mars/Olympus_Mons", "conditions": [{}]}, "timezone"),
        ({"timezone": "europe/berlin", "conditions": [{}]}, "timezone"),
        ({"timezone": "UTC"}, "conditions"),
        ({"timezone": "UTC", "conditions": [{}] * 51}, "conditions"),
        (
            {"timezone": "UTC", "conditions": [{}, {"start_time": "9:00"}]},
            "conditions[1].start_time",
        ),
        ({"timezone": "UTC", "conditions": [{"end_time": "24:00:01"}]}, "conditions[0].end_time"),
        ({"timezone": "UTC", "conditions": [{"start_dow": 8}]}, "conditions[0].start_dow"),
        ({"timezone": "UTC", "conditions": [{"end_dow": -1}]}, "conditions[0].end_dow"),
        ({"timezone": "UTC", "conditions": [{"start_mday": 32}]}, "conditions[0].start_mday"),
        ({"timezone": "UTC", "conditions": [{"month": 13}]}, "conditions[0].month"),
        (
            {"timezone": "UTC", "conditions": [{"start_datetime": "2030-13-01 00:00:00"}]},
            "conditions[0].start_datetime",
        ),
        (
            {"timezone": "UTC", "conditions": [{"start_time": "10:00:00", "end_time": "10:00:00"}]},
            "conditions[0]",
        ),
        ({"name": "n" * 256, "timezone": "UTC", "conditions": [{}]}, "name"),
    ],
)
def test_bad_intervals_are_400_naming_the_field(
    api: httpx.Client, tenant: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(f"/client/{tenant}/interval/", json=body)

    assert_error(response, 400)
    reason, fields = details(response)
    assert reason == "INVALID_INPUT"
    assert field in fields, response.text
    assert api.get(f"/client/{tenant}/interval/").json() == []


def test_bad_update_is_400_and_changes_nothing(api: httpx.Client, tenant: str) -> None:
    interval = create_interval(api, tenant, **OFFICE)

    response = api.put(
        f"/client/{tenant}/interval/{interval['id']}",
        json={"name": "new", "timezone": "Nowhere/Land"},
    )

    assert_error(response, 400)
    assert details(response)[1] == {"timezone"}
    assert api.get(f"/client/{tenant}/interval/{interval['id']}").json() == interval


def test_a_wrong_json_type_is_400(api: httpx.Client, tenant: str) -> None:
    response = api.post(
        f"/client/{tenant}/interval/", json={"timezone": "UTC", "conditions": [{"start_dow": "x"}]}
    )
    assert_error(response, 400)


def test_a_client_has_at_most_so_many_intervals_even_under_a_flood(
    api: httpx.Client, tenant: str
) -> None:
    """The cap holds when creates race each other: 60 at once with room for 20 left give
    exactly 20 intervals and 40 clear 429s."""
    limit = 1000  # services/api/validation.py MAX_INTERVALS_PER_CLIENT
    room, flood = 20, 60
    for _ in range(limit - room):
        create_interval(api, tenant)
    body = {"timezone": "UTC", "conditions": [{}]}
    with ThreadPoolExecutor(max_workers=flood) as pool:
        statuses = Counter(
            pool.map(
                lambda _: api.post(f"/client/{tenant}/interval/", json=body).status_code,
                range(flood),
            )
        )
    assert statuses == {200: room, 429: flood - room}, statuses

    response = api.post(f"/client/{tenant}/interval/", json=body)

    assert_error(response, 429)
    assert details(response)[0] == "QUOTA_EXCEEDED"
    assert response.json()["details"][0]["metadata"] == {"quota": "max_intervals"}
    # Deleting one gives the room back.
    last = api.get(f"/client/{tenant}/interval/?after_id=0&limit=1").json()[0]
    assert api.delete(f"/client/{tenant}/interval/{last['id']}").status_code == 200
    create_interval(api, tenant)


# --- queues and their interval -----------------------------------------------------------------


def test_queue_interval_id_round_trip(api: httpx.Client, tenant: str) -> None:
    office = create_interval(api, tenant, **OFFICE)
    night = create_interval(api, tenant, name="night")

    plain = create_queue(api, tenant, name="always open")
    assert plain["interval_id"] == 0
    queue = create_queue(api, tenant, name="windowed", interval_id=office["id"])
    assert queue["interval_id"] == office["id"]
    assert api.get(f"/client/{tenant}/task_scheduler/{queue['id']}").json() == queue
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == [plain, queue]

    moved = api.put(
        f"/client/{tenant}/task_scheduler/{queue['id']}", json={"interval_id": night["id"]}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["interval_id"] == night["id"]
    # A PUT without interval_id keeps it.
    kept = api.put(f"/client/{tenant}/task_scheduler/{queue['id']}", json={"comment": "c"}).json()
    assert kept["interval_id"] == night["id"]
    cleared = api.put(f"/client/{tenant}/task_scheduler/{queue['id']}", json={"interval_id": 0})
    assert cleared.json()["interval_id"] == 0


def test_an_unknown_interval_id_is_400(api: httpx.Client, tenant: str) -> None:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"interval_id": 4000000000})
    assert_error(response, 400)
    assert details(response) == ("INTERVAL_NOT_OWNED", {"interval_id"})
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == []


def test_deleting_an_interval_in_use_is_409_naming_the_queues(
    api: httpx.Client, tenant: str
) -> None:
    interval = create_interval(api, tenant)
    first = create_queue(api, tenant, interval_id=interval["id"])
    second = create_queue(api, tenant, interval_id=interval["id"])

    response = api.delete(f"/client/{tenant}/interval/{interval['id']}")

    assert_error(response, 409)
    assert details(response)[0] == "CONFLICT"
    message = response.json()["message"]
    assert f"{first['id']}, {second['id']}" in message, message
    assert api.get(f"/client/{tenant}/interval/{interval['id']}").json() == interval

    for queue in (first, second):
        api.put(f"/client/{tenant}/task_scheduler/{queue['id']}", json={"interval_id": 0})
    assert api.delete(f"/client/{tenant}/interval/{interval['id']}").status_code == 200


def test_deleting_a_queue_frees_its_interval(api: httpx.Client, tenant: str) -> None:
    interval = create_interval(api, tenant)
    queue = create_queue(api, tenant, interval_id=interval["id"])
    assert api.delete(f"/client/{tenant}/task_scheduler/{queue['id']}").status_code == 200
    assert api.delete(f"/client/{tenant}/interval/{interval['id']}").status_code == 200


# --- tenant isolation --------------------------------------------------------------------------


def test_another_tenants_interval_is_out_of_reach(
    make_client: ClientFactory, api: httpx.Client, tenant: str
) -> None:
    mine = create_interval(api, tenant, **OFFICE)
    other = f"t-{uuid.uuid4().hex[:12]}"
    intruder = make_client(other)
    path = f"/client/{other}/interval/{mine['id']}"

    assert_error(intruder.get(path), 404)
    assert_error(intruder.put(path, json={"name": "taken"}), 404)
    assert_error(intruder.delete(path), 404)
    assert intruder.get(f"/client/{other}/interval/").json() == []
    # Nor through the owner's path.
    assert_error(intruder.get(f"/client/{tenant}/interval/{mine['id']}"), 403)
    # Nor attached to a queue of its own, created or updated.
    refused = intruder.post(f"/client/{other}/task_scheduler/", json={"interval_id": mine["id"]})
    assert_error(refused, 400)
    assert details(refused) == ("INTERVAL_NOT_OWNED", {"interval_id"})
    queue = create_queue(intruder, other)
    refused = intruder.put(
        f"/client/{other}/task_scheduler/{queue['id']}", json={"interval_id": mine["id"]}
    )
    assert_error(refused, 400)
    assert intruder.get(f"/client/{other}/task_scheduler/{queue['id']}").json() == queue

    assert api.get(f"/client/{tenant}/interval/{mine['id']}").json() == mine
