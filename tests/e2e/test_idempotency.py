"""`Idempotency-Key` on the POSTs, through the real REST gateway: a retry replays the first
response, a reused key with another body is a 422, concurrent twins create once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from deploy.local.stack import Stack
from tests.support.database import stored_tasks
from tests.support.stacks import ClientFactory

TASK = {"a_number": "+79990001122", "b_number": "101"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


def new_queue(api: httpx.Client, tenant: str) -> str:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "q"})
    assert response.status_code == 200, response.text
    return f"/client/{tenant}/task_scheduler/{response.json()['id']}"


def reason(response: httpx.Response) -> str:
    details: list[dict[str, Any]] = response.json()["details"]
    return next(str(d["reason"]) for d in details if d["@type"].endswith("ErrorInfo"))


def post_at_once(
    clients: list[httpx.Client], url: str, body: dict[str, Any], headers: dict[str, str]
) -> list[httpx.Response]:
    """The same POST from each client, released together by a barrier."""
    start = threading.Barrier(len(clients))
    responses: list[httpx.Response] = []

    def post(client: httpx.Client) -> None:
        start.wait()
        responses.append(client.post(url, json=body, headers=headers))

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_a_retried_queue_create_replays_the_first_response(api: httpx.Client, tenant: str) -> None:
    headers = key()
    body = {"name": "once", "comment": "c"}

    first = api.post(f"/client/{tenant}/task_scheduler/", json=body, headers=headers)
    again = api.post(f"/client/{tenant}/task_scheduler/", json=body, headers=headers)

    assert first.status_code == again.status_code == 200, again.text
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert [q["id"] for q in api.get(f"/client/{tenant}/task_scheduler/").json()] == [
        first.json()["id"]
    ]


def test_a_retry_after_a_dropped_response_gets_the_same_tasks(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    queue = new_queue(api, tenant)
    headers = key()
    body = {"tasks": [TASK | {"name": f"t{i}"} for i in range(3)]}

    api.post(f"{queue}/tasks/", json=body, headers=headers)  # the response is "lost"
    retried = api.post(f"{queue}/tasks/", json=body, headers=headers)

    assert retried.status_code == 200, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    listed = api.get(f"{queue}/task/").json()
    assert [t["id"] for t in retried.json()] == [t["id"] for t in listed]
    assert len(listed) == 3
    assert stored_tasks(stack, tenant) == 3


def test_the_same_key_with_another_body_is_a_422_naming_the_key(
    api: httpx.Client, tenant: str
) -> None:
    queue = new_queue(api, tenant)
    headers = key()
    assert api.post(f"{queue}/tasks/", json={"tasks": [TASK]}, headers=headers).is_success

    other = api.post(f"{queue}/tasks/", json={"tasks": [TASK, TASK]}, headers=headers)
    # The same key on the other POST (a queue) is another request too.
    queue_post = api.post(f"/client/{tenant}/task_scheduler/", json={}, headers=headers)

    for response in (other, queue_post):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert "x-http-status" not in response.headers
        assert reason(response) == "IDEMPOTENCY_KEY_REUSED"
        assert headers["Idempotency-Key"] in response.json()["message"]
    assert len(api.get(f"{queue}/task/").json()) == 1


def test_me_and_the_client_id_are_the_same_request(api: httpx.Client, tenant: str) -> None:
    headers = key()
    first = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "a"}, headers=headers)
    again = api.post("/client/@me/task_scheduler/", json={"name": "a"}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


def test_keys_are_per_tenant(make_client: ClientFactory) -> None:
    headers = key()
    ids = []
    for client_id in (f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"):
        client = make_client(client_id)
        response = client.post(f"/client/{client_id}/task_scheduler/", json={}, headers=headers)
        assert response.status_code == 200, response.text
        assert "idempotent-replayed" not in response.headers
        ids.append(response.json()["id"])
    assert ids[0] != ids[1]


def test_without_a_key_every_post_creates(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    first = api.post(f"{queue}/tasks/", json={"tasks": [TASK]})
    second = api.post(f"{queue}/tasks/", json={"tasks": [TASK]})
    assert first.json()[0]["id"] != second.json()[0]["id"]
    assert "idempotent-replayed" not in second.headers


@pytest.mark.parametrize("bad", [b"x" * 256, "caf\u00e9".encode(), b"a\tb", b"a\x7fb"])
def test_a_malformed_key_is_a_400(api: httpx.Client, tenant: str, bad: bytes) -> None:
    response = api.post(
        f"/client/{tenant}/task_scheduler/", json={}, headers={b"Idempotency-Key": bad}
    )
    assert response.status_code == 400, response.text
    if bad != b"a\x7fb":  # Envoy's HTTP codec refuses a DEL in a header value by itself
        assert "Idempotency-Key" in response.json()["message"]
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == []


def test_the_longest_key_is_accepted(api: httpx.Client, tenant: str) -> None:
    headers = {"Idempotency-Key": "~ !" * 85}
    first = api.post(f"/client/{tenant}/task_scheduler/", json={}, headers=headers)
    again = api.post(f"/client/{tenant}/task_scheduler/", json={}, headers=headers)
    assert first.status_code == 200, first.text
    assert again.json()["id"] == first.json()["id"]


def test_a_failed_request_does_not_take_the_key(api: httpx.Client, tenant: str) -> None:
    headers = key()
    missing = api.post(
        f"/client/{tenant}/task_scheduler/999999999/tasks/", json={"tasks": [TASK]}, headers=headers
    )
    assert missing.status_code == 404, missing.text
    queue = new_queue(api, tenant)
    response = api.post(f"{queue}/tasks/", json={"tasks": [TASK]}, headers=headers)
    assert response.status_code == 200, response.text
    assert "idempotent-replayed" not in response.headers


def test_two_requests_with_one_key_at_once_create_once(
    stack: Stack, make_client: ClientFactory, tenant: str
) -> None:
    clients = [make_client(tenant), make_client(tenant)]
    queue = new_queue(clients[0], tenant)
    for _ in range(5):  # several rounds: the race is decided differently each time
        headers = key()
        body = {"tasks": [TASK | {"name": f"n{i}"} for i in range(200)]}
        responses = post_at_once(clients, f"{queue}/tasks/", body, headers)

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        assert responses[0].json() == responses[1].json()
        replayed = [r.headers.get("idempotent-replayed") for r in responses]
        assert sorted(replayed, key=str) == sorted(["true", None], key=str)
    assert len(clients[0].get(f"{queue}/task/", params={"limit": 1000}).json()) == 1000
    assert stored_tasks(stack, tenant) == 1000


def test_an_expired_key_is_taken_anew(stack: Stack, api: httpx.Client, tenant: str) -> None:
    headers = key()
    first = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "a"}, headers=headers)
    with psycopg.connect(stack.database_url) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second' "
            "WHERE client_id = %s",
            (tenant,),
        )
    other = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "b"}, headers=headers)
    assert other.status_code == 200, other.text
    assert "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
