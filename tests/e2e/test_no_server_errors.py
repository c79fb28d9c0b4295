"""Whatever a client sends, the answer is never a 5xx: property-based, through Envoy."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TASK_FIELDS = [
    "name",
    "a_number",
    "b_number",
    "extension_id",
    "try_count",
    "try_again_pause",
    "url_before",
    "url_before_again",
    "url_success",
    "url_after",
    "start_time_utc",
    "callback_params",
    "try_count_caller",
    "try_again_pause_caller",
]
QUEUE_FIELDS = ["name", "comment", "status", "concurrent_task_limit", "interval_id"]
INTERVAL_FIELDS = ["name", "timezone", "conditions"]
CONDITION_FIELDS = [
    "start_time",
    "end_time",
    "start_dow",
    "end_dow",
    "start_mday",
    "end_mday",
    "month",
    "start_datetime",
    "end_datetime",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "+79990001122",
            "on",
            "off",
            "2030-01-01 00:00:00",
            "http://x.test/",
            "Europe/Berlin",
            "09:00:00",
            "24:00:00",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def objects(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields), json_values, max_size=len(fields))


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=objects(QUEUE_FIELDS))
def test_queue_bodies_never_5xx(api: httpx.Client, tenant: str, body: dict[str, Any]) -> None:
    reply = api.post(f"/client/{tenant}/task_scheduler/", json=body)
    assert reply.status_code < 500, (body, reply.text)
    assert isinstance(reply.json(), dict)


@FUZZ
@given(
    body=objects(INTERVAL_FIELDS),
    conditions=st.none() | st.lists(objects(CONDITION_FIELDS), max_size=3),
    update=st.booleans(),
)
def test_interval_bodies_never_5xx(
    api: httpx.Client,
    tenant: str,
    body: dict[str, Any],
    conditions: list[dict[str, Any]] | None,
    update: bool,
) -> None:
    if conditions is not None:
        body["conditions"] = conditions
    if update:
        interval = api.post(
            f"/client/{tenant}/interval/", json={"timezone": "UTC", "conditions": [{}]}
        ).json()
        reply = api.put(f"/client/{tenant}/interval/{interval['id']}", json=body)
        api.delete(f"/client/{tenant}/interval/{interval['id']}")
    else:
        reply = api.post(f"/client/{tenant}/interval/", json=body)
        if reply.status_code == 200:
            api.delete(f"/client/{tenant}/interval/{reply.json()['id']}")
    assert reply.status_code < 500, (body, reply.text)
    assert isinstance(reply.json(), dict)


@FUZZ
@given(path=st.text(alphabet="abc019-_@%/?=&.", max_size=30))
def test_interval_paths_never_5xx(api: httpx.Client, tenant: str, path: str) -> None:
    reply = api.get(f"/client/{tenant}/interval/{path}")
    assert reply.status_code < 500, (path, reply.text)


@FUZZ
@given(tasks=st.lists(objects(TASK_FIELDS), max_size=3), raw=st.booleans())
def test_task_bodies_never_5xx(
    api: httpx.Client, tenant: str, tasks: list[dict[str, Any]], raw: bool
) -> None:
    queue = api.post(f"/client/{tenant}/task_scheduler/", json={}).json()
    body: Any = tasks if raw else {"tasks": tasks}
    reply = api.post(
        f"/client/{tenant}/task_scheduler/{queue['id']}/tasks/", content=json.dumps(body)
    )
    assert reply.status_code < 500, (body, reply.text)


@FUZZ
@given(path=st.text(alphabet="abc019-_@%/?=&.", max_size=30))
def test_paths_never_5xx(api: httpx.Client, tenant: str, path: str) -> None:
    reply = api.get(f"/client/{tenant}/task_scheduler/{path}")
    assert reply.status_code < 500, (path, reply.text)


# Found by schemathesis (tests/e2e/test_openapi_fuzz.py): HTTP headers reach the api service
# as gRPC metadata, and gRPC refused these with a 500 (or a 504 for a tiny grpc-timeout).
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x~odd$name", "1"),  # a valid HTTP header name, not a valid gRPC metadata key
        ("x-trace-bin", "!!!"),  # "-bin" metadata must be base64
        ("grpc-timeout", "abc"),
        ("grpc-timeout", "1n"),
        ("grpc-encoding", "nonsense"),
    ],
)
def test_headers_grpc_would_refuse_are_ignored(
    api: httpx.Client, tenant: str, name: str, value: str
) -> None:
    reply = api.post(f"/client/{tenant}/task_scheduler/", json={"name": "h"}, headers={name: value})
    assert reply.status_code == 200, reply.text
    queue = reply.json()
    assert api.get(f"/client/{tenant}/task_scheduler/{queue['id']}").json() == queue
