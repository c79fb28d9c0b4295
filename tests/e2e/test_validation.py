"""Bad input through the real REST gateway: a 400 JSON error naming the field, nothing stored."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

TASK: dict[str, Any] = {"a_number": "+79990001122", "b_number": "101"}
MISSING = object()  # a field left out of the request


def task(**fields: Any) -> dict[str, Any]:
    """A valid task with some fields changed (or left out, with MISSING)."""
    merged = TASK | fields
    return {k: v for k, v in merged.items() if v is not MISSING}


def describe(body: dict[str, Any], base: dict[str, Any] = TASK) -> str:
    """A readable test id: what differs from base (a valid task unless told)."""
    parts = [f"no-{k}" for k in base if k not in body]
    parts += [f"{k}={json.dumps(v)}" for k, v in body.items() if base.get(k, MISSING) != v]
    text = ",".join(parts) or "valid"
    return text if len(text) <= 60 else text[:57] + "..."


def names_field(body: dict[str, Any], field: str) -> bool:
    """The error names `field` (or something inside it) in its message or field violations."""
    inside = rf"(?<![\w.\]]){re.escape(field)}(?!\w)"
    if re.search(inside, body.get("message", "")):
        return True
    reported = [
        violation["field"]
        for detail in body.get("details", [])
        for violation in detail.get("field_violations", [])
    ]
    return any(re.fullmatch(rf"{re.escape(field)}([.\[].*)?", name) for name in reported)


def assert_bad_request(response: httpx.Response, field: str | None) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert type(body["code"]) is int
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert names_field(body, field), f"{field!r} not named in {body}"


def new_queue(api: httpx.Client, tenant: str, **fields: Any) -> str:
    response = api.post(f"/client/{tenant}/task_scheduler/", json=fields)
    assert response.status_code == 200, response.text
    return f"/client/{tenant}/task_scheduler/{response.json()['id']}"


def post_raw(api: httpx.Client, path: str, content: bytes, method: str = "POST") -> httpx.Response:
    return api.request(method, path, content=content, headers={"content-type": "application/json"})


# --- queue create ------------------------------------------------------------------------------

QUEUE_CREATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("name", {"name": 123}),
    ("name", {"name": True}),
    ("name", {"name": "x" * 256}),
    ("name", {"name": "nul\u0000byte"}),
    ("comment", {"comment": 5}),
    ("comment", {"comment": {"text": "x"}}),
    ("comment", {"comment": "x" * 4001}),
    ("status", {"status": "ON"}),
    ("status", {"status": "enabled"}),
    ("status", {"status": ""}),
    ("status", {"status": 1}),
    ("status", {"status": True}),
    ("concurrent_task_limit", {"concurrent_task_limit": 0}),
    ("concurrent_task_limit", {"concurrent_task_limit": -1}),
    ("concurrent_task_limit", {"concurrent_task_limit": 10_001}),
    ("concurrent_task_limit", {"concurrent_task_limit": 2**40}),
    ("concurrent_task_limit", {"concurrent_task_limit": "abc"}),
    ("concurrent_task_limit", {"concurrent_task_limit": 1.5}),
    ("concurrent_task_limit", {"concurrent_task_limit": True}),
    ("concurrent_task_limit", {"concurrent_task_limit": {}}),
]


@pytest.mark.parametrize(
    ("field", "body"), QUEUE_CREATE_CASES, ids=[describe(b, {}) for _, b in QUEUE_CREATE_CASES]
)
def test_queue_create_refuses_bad_field(
    api: httpx.Client, tenant: str, field: str, body: dict[str, Any]
) -> None:
    response = api.post(f"/client/{tenant}/task_scheduler/", json=body)

    assert_bad_request(response, field)
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == []


@pytest.mark.parametrize(
    "content", [b'{"name": "q"', b"not json", b"[]", b'[{"name": "q"}]', b'"q"', b"42"]
)
def test_queue_create_refuses_a_body_that_is_not_an_object(
    api: httpx.Client, tenant: str, content: bytes
) -> None:
    response = post_raw(api, f"/client/{tenant}/task_scheduler/", content)

    assert_bad_request(response, None)
    assert api.get(f"/client/{tenant}/task_scheduler/").json() == []


# --- queue update ------------------------------------------------------------------------------

QUEUE_UPDATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("comment", {"comment": 5}),
    ("comment", {"comment": "x" * 4001}),
    ("comment", {"comment": "bell\u0007"}),
    ("status", {"status": "OFF"}),
    ("status", {"status": ""}),
    ("status", {"status": 0}),
    ("concurrent_task_limit", {"concurrent_task_limit": 0}),
    ("concurrent_task_limit", {"concurrent_task_limit": -5}),
    ("concurrent_task_limit", {"concurrent_task_limit": "many"}),
    ("concurrent_task_limit", {"concurrent_task_limit": 2.5}),
    ("concurrent_task_limit", {"concurrent_task_limit": 10_001}),
    # One bad field spoils the whole update: the good one is not applied either.
    ("concurrent_task_limit", {"comment": "fine", "concurrent_task_limit": 0}),
    ("status", {"status": "maybe", "concurrent_task_limit": 5}),
]


@pytest.mark.parametrize(
    ("field", "body"), QUEUE_UPDATE_CASES, ids=[describe(b, {}) for _, b in QUEUE_UPDATE_CASES]
)
def test_queue_update_refuses_bad_field(
    api: httpx.Client, tenant: str, field: str, body: dict[str, Any]
) -> None:
    queue = new_queue(api, tenant, name="n", comment="c", concurrent_task_limit=3)
    before = api.get(queue).json()

    response = api.put(queue, json=body)

    assert_bad_request(response, field)
    assert api.get(queue).json() == before


@pytest.mark.parametrize("content", [b'{"status": "on"', b"[]", b'"on"'])
def test_queue_update_refuses_a_body_that_is_not_an_object(
    api: httpx.Client, tenant: str, content: bytes
) -> None:
    queue = new_queue(api, tenant)
    before = api.get(queue).json()

    assert_bad_request(post_raw(api, queue, content, method="PUT"), None)
    assert api.get(queue).json() == before


# --- task input --------------------------------------------------------------------------------

TASK_CASES: list[tuple[str, dict[str, Any]]] = [
    # a_number / b_number: digits, '*', '#', optional leading '+', at most 32 characters.
    ("a_number", task(a_number="12ab")),
    ("a_number", task(a_number="+7 999 000")),
    ("a_number", task(a_number="1" * 33)),
    ("a_number", task(a_number="")),
    ("a_number", task(a_number="+")),
    ("a_number", task(a_number="1+2")),
    ("a_number", task(a_number=MISSING)),
    ("a_number", task(a_number=79990001122)),
    ("b_number", task(b_number="call me")),
    ("b_number", task(b_number="9" * 33)),
    ("b_number", task(b_number="")),
    ("b_number", task(b_number=MISSING)),
    ("name", task(name=5)),
    ("name", task(name="x" * 256)),
    ("name", task(name="nul\u0000byte")),
    ("extension_id", task(extension_id=-1)),
    ("extension_id", task(extension_id="abc")),
    ("extension_id", task(extension_id=1.5)),
    ("try_count", task(try_count=0)),
    ("try_count", task(try_count=51)),
    ("try_count", task(try_count=-1)),
    ("try_count", task(try_count="x")),
    ("try_count", task(try_count=2.5)),
    ("try_again_pause", task(try_again_pause=-1)),
    ("try_again_pause", task(try_again_pause="-1")),
    ("try_again_pause", task(try_again_pause="abc")),
    ("try_again_pause", task(try_again_pause="")),
    ("try_again_pause", task(try_again_pause=1.5)),
    ("try_again_pause", task(try_again_pause="1.5")),
    ("try_again_pause", task(try_again_pause=True)),
    ("try_again_pause", task(try_again_pause=[60])),
    ("try_again_pause", task(try_again_pause={"seconds": 60})),
    ("try_again_pause", task(try_again_pause=10**12)),
    ("try_count_caller", task(try_count_caller=-1)),
    ("try_count_caller", task(try_count_caller=51)),
    ("try_count_caller", task(try_count_caller="x")),
    ("try_count_caller", task(try_count_caller=2.5)),
    ("try_count_caller", task(try_count_caller=True)),
    ("try_again_pause_caller", task(try_again_pause_caller=-1)),
    ("try_again_pause_caller", task(try_again_pause_caller=864_001)),
    ("try_again_pause_caller", task(try_again_pause_caller="abc")),
    ("try_again_pause_caller", task(try_again_pause_caller=1.5)),
    ("try_again_pause_caller", task(try_again_pause_caller=10**12)),
    ("url_before", task(url_before="ftp://hooks.example.com/x")),
    ("url_before", task(url_before="mailto:ops@example.com")),
    ("url_before_again", task(url_before_again="not a url")),
    ("url_before_again", task(url_before_again=5)),
    ("url_success", task(url_success="/relative/path")),
    ("url_success", task(url_success="http://")),
    ("url_after", task(url_after="hooks.example.com/after")),
    ("url_after", task(url_after="https://example.com/" + "x" * 2048)),
    ("start_time_utc", task(start_time_utc="2026-02-30 00:00:00")),
    ("start_time_utc", task(start_time_utc="tomorrow")),
    ("start_time_utc", task(start_time_utc="2030-01-02T03:04:05Z")),
    ("start_time_utc", task(start_time_utc="2030-01-02 03:04:60")),
    ("start_time_utc", task(start_time_utc="2030-01-02")),
    ("start_time_utc", task(start_time_utc=1893553445)),
    ("callback_params", task(callback_params="caller")),
    ("callback_params.caller_id_number", task(callback_params={"caller_id_number": "abc"})),
    ("callback_params.caller_id_number", task(callback_params={"caller_id_number": "1" * 33})),
    ("callback_params.caller_id_number", task(callback_params={"caller_id_number": 5})),
    ("callback_params.caller_id_name", task(callback_params={"caller_id_name": "x" * 65})),
    ("callback_params.caller_id_name", task(callback_params={"caller_id_name": 5})),
    ("callback_params.caller_id_name", task(callback_params={"caller_id_name": "\u0001"})),
    (
        "callback_params.extended_a_numbers",
        task(callback_params={"extended_a_numbers": ["102", "abc"]}),
    ),
    ("callback_params.extended_a_numbers", task(callback_params={"extended_a_numbers": [""]})),
    ("callback_params.call_duration", task(callback_params={"call_duration": 3601})),
    ("callback_params.call_duration", task(callback_params={"call_duration": -1})),
    ("callback_params.call_duration", task(callback_params={"call_duration": "long"})),
    ("callback_params.ring_timeout", task(callback_params={"ring_timeout": 4})),
    ("callback_params.ring_timeout", task(callback_params={"ring_timeout": 61})),
    ("callback_params.ring_timeout", task(callback_params={"ring_timeout": 2.5})),
    ("callback_params.extended_a_numbers", task(callback_params={"extended_a_numbers": [102]})),
    (
        "callback_params.extended_a_numbers",
        task(callback_params={"extended_a_numbers": [str(200 + i) for i in range(21)]}),
    ),
]


@pytest.mark.parametrize(
    ("field", "bad_task"), TASK_CASES, ids=[describe(t) for _, t in TASK_CASES]
)
def test_task_add_refuses_bad_field_and_names_its_index(
    api: httpx.Client, tenant: str, field: str, bad_task: dict[str, Any]
) -> None:
    queue = new_queue(api, tenant)

    response = api.post(f"{queue}/tasks/", json={"tasks": [TASK, bad_task]})

    assert_bad_request(response, f"tasks[1].{field}")
    assert api.get(f"{queue}/task/").json() == []


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("tasks", {"tasks": []}),
        ("tasks", {}),
        ("tasks", {"tasks": None}),
        ("tasks", {"tasks": [TASK] * 1001}),
        ("tasks", {"tasks": "+79990001122"}),
        ("tasks[0]", {"tasks": [1]}),
        ("tasks[1]", {"tasks": [TASK, "101"]}),
    ],
    ids=["empty", "missing", "null", "1001", "string", "number-item", "string-item"],
)
def test_task_add_refuses_a_bad_tasks_array(
    api: httpx.Client, tenant: str, field: str, body: dict[str, Any]
) -> None:
    queue = new_queue(api, tenant)

    response = api.post(f"{queue}/tasks/", json=body)

    assert_bad_request(response, field)
    assert api.get(f"{queue}/task/").json() == []


# --- caller id name: it goes into SIP headers --------------------------------------------------

# A name that, unescaped in quotes, would end the From header and add a header of the tenant's.
INJECTED_NAME = 'x"\r\nP-Charge-Info: <sip:+15550001111@t>\r\nX: "'


def test_a_caller_id_name_that_would_add_a_sip_header_is_refused(
    api: httpx.Client, tenant: str
) -> None:
    queue = new_queue(api, tenant)
    bad = task(callback_params={"caller_id_name": INJECTED_NAME})

    response = api.post(f"{queue}/tasks/", json={"tasks": [bad]})

    assert_bad_request(response, "tasks[0].callback_params.caller_id_name")
    violations = [
        (v["field"], v["description"])
        for detail in response.json()["details"]
        for v in detail.get("field_violations", [])
    ]
    assert violations == [
        (
            "tasks[0].callback_params.caller_id_name",
            "must be letters, digits, punctuation, symbols and spaces only: "
            "character 3 (U+000D) is a control character",
        )
    ]
    assert api.get(f"{queue}/task/").json() == []


@pytest.mark.parametrize(
    "name",
    ["a\tb", "a\nb", "a\x7f", "a\x85b", "a\u2028b", "a\u2029b", "a\u200bb", "a\u202eb", "\ufeffa"],
    ids=["tab", "lf", "del", "nel", "line-sep", "para-sep", "zero-width", "bidi", "bom"],
)
def test_a_caller_id_name_with_an_invisible_character_is_refused(
    api: httpx.Client, tenant: str, name: str
) -> None:
    queue = new_queue(api, tenant)

    response = api.post(
        f"{queue}/tasks/", json={"tasks": [task(callback_params={"caller_id_name": name})]}
    )

    assert_bad_request(response, "tasks[0].callback_params.caller_id_name")


def test_a_caller_id_name_with_quotes_and_punctuation_is_kept_as_sent(
    api: httpx.Client, tenant: str
) -> None:
    queue = new_queue(api, tenant)
    name = 'Zoë "Sales" \\ <Nord>; Ltd, 日本\u00a0#1'

    response = api.post(
        f"{queue}/tasks/", json={"tasks": [task(callback_params={"caller_id_name": name})]}
    )

    assert response.status_code == 200, response.text
    [stored] = api.get(f"{queue}/task/").json()
    assert stored["callback_params"]["caller_id_name"] == name


@pytest.mark.parametrize(
    "content",
    [
        b'{"tasks": [{"a_number": "1", "b_number": "2"}]',
        b"tasks=1",
        json.dumps([TASK]).encode(),
        json.dumps(TASK).encode()[:-1] + b",}",
    ],
    ids=["truncated", "form", "bare-array", "trailing-comma"],
)
def test_task_add_refuses_malformed_json(api: httpx.Client, tenant: str, content: bytes) -> None:
    queue = new_queue(api, tenant)

    assert_bad_request(post_raw(api, f"{queue}/tasks/", content), None)
    assert api.get(f"{queue}/task/").json() == []


# --- path and size -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["abc", "-1", "1.5", "99999999999"])
def test_a_scheduler_id_that_is_not_an_id_is_refused(
    api: httpx.Client, tenant: str, suffix: str
) -> None:
    response = api.get(f"/client/{tenant}/task_scheduler/{suffix}")

    assert response.status_code in (400, 404), response.text
    assert response.json()["message"]


def test_a_task_id_that_is_not_an_id_is_refused(api: httpx.Client, tenant: str) -> None:
    assert_bad_request(api.get(f"{new_queue(api, tenant)}/task/abc"), "task_id")


def huge_body(size: int = 4 * 1024 * 1024 + 1024) -> bytes:
    return json.dumps({"tasks": [TASK | {"name": "x" * size}]}).encode()


def test_a_body_over_4_mib_is_413_json(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)

    for path, method in [
        (f"{queue}/tasks/", "POST"),
        (f"/client/{tenant}/task_scheduler/", "POST"),
        (queue, "PUT"),
    ]:
        response = post_raw(api, path, huge_body(), method=method)
        assert response.status_code == 413, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert type(response.json()["code"]) is int

    assert api.get(f"{queue}/task/").json() == []
    assert len(api.get(f"/client/{tenant}/task_scheduler/").json()) == 1


def test_a_body_just_under_4_mib_is_not_refused_for_size(api: httpx.Client, tenant: str) -> None:
    queue = new_queue(api, tenant)
    # 900 tasks with long (valid) URLs: about 3.7 MB of JSON.
    long_url = "https://hooks.example.com/" + "a" * 2000
    body = {"tasks": [TASK | {"url_before": long_url, "url_after": long_url}] * 900}
    content = json.dumps(body).encode()
    assert 3_500_000 < len(content) < 4 * 1024 * 1024

    response = post_raw(api, f"{queue}/tasks/", content)

    assert response.status_code == 200, response.text[:500]
    assert len(response.json()) == 900


# Envoy's transcoder rejects a JSON list given for a single value before the api sees it,
# with "Proto field is not repeating, cannot start list" and no field name (README, "Known
# limits"). It is still a 400 JSON error, and nothing is stored.
@pytest.mark.parametrize(
    ("path_kind", "body"),
    [
        ("queues", {"comment": ["x"]}),
        ("queues", {"status": ["on"]}),
        ("tasks", {"tasks": [task(b_number=["101"])]}),
        ("tasks", {"tasks": [task(callback_params=["caller"])]}),
    ],
)
def test_a_list_for_a_single_value_is_a_400_and_stores_nothing(
    api: httpx.Client, tenant: str, path_kind: str, body: dict[str, Any]
) -> None:
    queue = new_queue(api, tenant)
    path = f"/client/{tenant}/task_scheduler/" if path_kind == "queues" else f"{queue}/tasks/"
    assert_bad_request(api.post(path, json=body), None)
    assert len(api.get(f"/client/{tenant}/task_scheduler/").json()) == 1
    assert api.get(f"{queue}/task/").json() == []
