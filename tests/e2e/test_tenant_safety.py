"""A hostile or careless tenant, through Envoy: another tenant's SIP account (extension) and
caller id, denied destinations, and each quota (stored tasks, callbacks in progress, new
calls per second). The operator's settings are made with the real admin command."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from deploy.local.stack import Stack
from tests.support.calls import max_overlap
from tests.support.queues import create_queue
from tests.support.simulated_phones import ANSWERING_NUMBER, LONG_CALL, OTHER_ANSWERING_NUMBER
from tests.support.stacks import ClientFactory

TASK = {"a_number": ANSWERING_NUMBER, "b_number": OTHER_ANSWERING_NUMBER}


def error_of(response: httpx.Response, status: int) -> tuple[str, list[str], str]:
    """(ErrorInfo.reason, the fields at fault, the message) of a JSON error."""
    assert response.status_code == status, response.text
    body = response.json()
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}
    fields = [v["field"] for v in details.get("BadRequest", {}).get("field_violations", [])]
    return details["ErrorInfo"]["reason"], fields, body["message"]


def add(api: httpx.Client, tenant: str, queue_id: int, *tasks: dict[str, Any]) -> httpx.Response:
    return api.post(
        f"/client/{tenant}/task_scheduler/{queue_id}/tasks/", json={"tasks": list(tasks)}
    )


def new_queue(api: httpx.Client, tenant: str) -> int:
    response = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "q"})
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


@pytest.fixture
def other_tenant(tenant: str) -> str:
    return f"{tenant}-other"


# --- SIP accounts --------------------------------------------------------------------------------


def test_another_tenants_extension_is_refused(
    stack: Stack, make_client: ClientFactory, tenant: str, other_tenant: str
) -> None:
    stack.admin("account", "add", other_tenant, "7", "--username", "acct7", "--password", "pw7")
    api, owner_api = make_client(tenant), make_client(other_tenant)

    response = add(api, tenant, new_queue(api, tenant), TASK, TASK | {"extension_id": 7})

    reason, fields, message = error_of(response, 400)
    assert reason == "EXTENSION_NOT_OWNED"
    assert fields == ["tasks[1].extension_id"]
    assert "extension 7" in message
    # The owner may use it; everyone may use the operator's default account (0).
    owned = add(
        owner_api, other_tenant, new_queue(owner_api, other_tenant), TASK | {"extension_id": 7}
    )
    assert owned.status_code == 200, owned.text
    assert add(api, tenant, new_queue(api, tenant), TASK | {"extension_id": 0}).status_code == 200


def test_the_dialer_refuses_a_foreign_extension_that_got_past_the_api(
    stack: Stack, api: httpx.Client, tenant: str, other_tenant: str
) -> None:
    """Defence in depth: a task written straight into the database (or whose account was
    taken away since) is not dialed on anybody's account."""
    stack.admin("account", "add", other_tenant, "9", "--username", "acct9", "--password", "pw9")
    queue = create_queue(api, tenant, status="off")
    task = queue.add_one()
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("UPDATE tasks SET extension_id = 9 WHERE id = %s", (task["id"],))
    queue.set(status="on")

    done = queue.wait_finished(
        task["id"],
    )

    assert done["finish_result"] == "failed"
    assert "extension 9 is not a SIP account" in done["finish_comment"]
    record = api.get(f"/client/{tenant}/call_history/{done['cdr']}").json()
    assert record["result"] == "error" and record["legs"] == []


# --- caller ids ----------------------------------------------------------------------------------


def test_a_caller_id_the_tenant_does_not_own_is_refused(
    stack: Stack, make_client: ClientFactory, tenant: str, other_tenant: str
) -> None:
    stack.admin("set", other_tenant, "--caller-id", "+15557770001")
    api, owner_api = make_client(tenant), make_client(other_tenant)
    spoofed = TASK | {"callback_params": {"caller_id_number": "+15557770001"}}

    reason, fields, message = error_of(add(api, tenant, new_queue(api, tenant), spoofed), 400)

    assert reason == "CALLER_ID_NOT_ALLOWED"
    assert fields == ["tasks[0].callback_params.caller_id_number"]
    assert "+15557770001" in message
    owned = add(owner_api, other_tenant, new_queue(owner_api, other_tenant), spoofed)
    assert owned.status_code == 200, owned.text
    # No caller id at all is fine: the trunk shows the account's own.
    assert add(api, tenant, new_queue(api, tenant), TASK).status_code == 200


# --- destinations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (TASK | {"a_number": "+19005550100"}, "tasks[1].a_number"),
        (TASK | {"b_number": "0019765550100"}, "tasks[1].b_number"),
        (
            TASK | {"callback_params": {"extended_a_numbers": ["101", "+447000000001"]}},
            "tasks[1].callback_params.extended_a_numbers[1]",
        ),
    ],
)
def test_premium_rate_destinations_are_denied_by_default(
    api: httpx.Client, tenant: str, task: dict[str, Any], field: str
) -> None:
    queue_id = new_queue(api, tenant)

    reason, fields, _ = error_of(add(api, tenant, queue_id, TASK, task), 400)

    assert (reason, fields) == ("DESTINATION_DENIED", [field])
    assert api.get(f"/client/{tenant}/task_scheduler/{queue_id}/task/").json() == []


def test_the_operator_sets_a_tenants_destination_rules(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    # Only Russian numbers, and 1-900 numbers as an exception to the default.
    stack.admin("set", tenant, "--deny", "", "--allow", "+7", "--allow", "+1900")
    queue_id = new_queue(api, tenant)

    assert (
        add(
            api, tenant, queue_id, {"a_number": "+79990001122", "b_number": "+74950000000"}
        ).status_code
        == 200
    )
    assert (
        add(
            api, tenant, queue_id, TASK | {"a_number": "+19005550100", "b_number": "+79990001122"}
        ).status_code
        == 200
    )
    reason, fields, _ = error_of(
        add(api, tenant, queue_id, {"a_number": "+79990001122", "b_number": "+15550001111"}), 400
    )
    assert (reason, fields) == ("DESTINATION_DENIED", ["tasks[0].b_number"])


# --- quotas --------------------------------------------------------------------------------------


def test_stored_tasks_quota(stack: Stack, api: httpx.Client, tenant: str) -> None:
    stack.admin("set", tenant, "--max-stored-tasks", "5")
    first, second = new_queue(api, tenant), new_queue(api, tenant)
    stored = add(api, tenant, first, TASK, TASK, TASK).json()

    response = add(api, tenant, second, TASK, TASK, TASK)

    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == 8  # RESOURCE_EXHAUSTED
    reason, _, message = error_of(response, 429)
    assert reason == "QUOTA_EXCEEDED" and "stored tasks" in message and "5" in message
    assert api.get(f"/client/{tenant}/task_scheduler/{second}/task/").json() == []  # none
    # Deleting tasks, and queues with their tasks, gives the room back.
    assert (
        api.delete(f"/client/{tenant}/task_scheduler/{first}/task/{stored[0]['id']}").status_code
        == 200
    )
    assert add(api, tenant, second, TASK, TASK, TASK).status_code == 200
    assert add(api, tenant, second, TASK).status_code == 429
    assert api.delete(f"/client/{tenant}/task_scheduler/{first}").status_code == 200
    assert add(api, tenant, second, TASK, TASK).status_code == 200
    assert stack.admin("show", tenant)["stored_tasks"] == 5


def _calls_of_client(stack: Stack, client_id: str) -> list[tuple[datetime, datetime | None]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT started_at, ended_at FROM calls WHERE client_id = %s ORDER BY started_at",
            (client_id,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def call_intervals_of(
    calls: list[tuple[datetime, datetime | None]],
) -> list[tuple[datetime, datetime]]:
    ended = [(start, end) for start, end in calls if end is not None]
    assert len(ended) == len(calls), "a call has not ended"
    return ended


def test_callbacks_in_progress_quota_across_queues(
    stack: Stack, api: httpx.Client, tenant: str
) -> None:
    stack.admin("set", tenant, "--max-in-progress", "2")
    queues = [create_queue(api, tenant, status="off", limit=5) for _ in range(2)]
    for queue in queues:
        queue.add(*[LONG_CALL] * 4)
    for queue in queues:
        queue.set(status="on")

    for queue in queues:
        queue.wait_all_finished(timeout=60)

    calls = _calls_of_client(stack, tenant)
    assert len(calls) == 8
    intervals = call_intervals_of(calls)
    # Each queue alone would have run 4 at once (its limit is 5): the tenant's quota held
    # them to 2, and 2 did run together.
    assert max_overlap(intervals) == 2


def test_new_calls_per_second_quota(stack: Stack, api: httpx.Client, tenant: str) -> None:
    stack.admin("set", tenant, "--calls-per-second", "2")
    queue = create_queue(api, tenant, status="off", limit=20)
    queue.add(*[TASK] * 8)
    queue.set(status="on")

    queue.wait_all_finished(timeout=60)

    starts = [start for start, _ in _calls_of_client(stack, tenant)]
    assert len(starts) == 8
    # Each claim's calls are recorded by a dialer in one transaction, so they share one
    # started_at (the database's now()): the groups of equal times are the claims. A bucket
    # of 2 (a second's worth) lets out at most 2 a claim, so 8 calls take at least 4 claims;
    # without the quota one claim took all 8. (No clock against a number: equal timestamps
    # of the database, the witness, decide.)
    claims = Counter(starts)
    assert max(claims.values()) <= 2, claims
    assert len(claims) >= 4, claims


def test_quotas_are_per_tenant(
    stack: Stack, make_client: ClientFactory, tenant: str, other_tenant: str
) -> None:
    """One tenant's exhausted quota does not hold another's tasks."""
    stack.admin("set", tenant, "--max-in-progress", "0")
    held, free = make_client(tenant), make_client(other_tenant)
    held_queue = create_queue(held, tenant)
    free_queue = create_queue(free, other_tenant)
    held_task = held_queue.add_one()

    done = free_queue.wait_finished(
        free_queue.add_one()["id"],
    )

    assert done["finish_result"] == "success"
    # Due, in a switched-on queue, held back by its tenant's quota.
    held_now = held_queue.must_task(held_task["id"])
    assert (held_now["status"], held_now["cdr"]) == ("delayed_concurrent_task", "")
