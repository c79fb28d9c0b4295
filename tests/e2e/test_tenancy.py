"""Tenant isolation and authentication through the real REST gateway.

Tenant A owns a queue and a task whose texts are secrets; tenant B tries every way to reach
them. B must never get A's data (in a success or in an error body) nor change it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.local.keys import KEY_ID, PRIVATE_KEY, mint_token
from deploy.local.stack import Stack
from services.api.auth import ALGORITHM, AUDIENCE, ISSUER
from tests.support.stacks import ClientFactory

TASK = {"a_number": "+79990001122", "b_number": "101"}
SECRETS = ("alpha-secret-queue", "alpha-secret-comment", "alpha-secret-task", "+70000004242")
ENDPOINTS = [
    "get-queue",
    "put-queue",
    "delete-queue",
    "add-tasks",
    "list-tasks",
    "get-task",
    "delete-task",
]


@dataclass(frozen=True)
class World:
    a_id: str
    a: httpx.Client
    a_queue: int
    a_task: int
    b_id: str
    b: httpx.Client
    b_queue: int
    b_task: int

    def a_state(self) -> tuple[Any, Any]:
        """Everything of A's that B might change, as A sees it."""
        queues = self.a.get(f"/client/{self.a_id}/task_scheduler/").json()
        tasks = self.a.get(f"/client/{self.a_id}/task_scheduler/{self.a_queue}/task/").json()
        return queues, tasks


@pytest.fixture
def world(make_client: ClientFactory, tenant: str) -> World:
    a_id, b_id = tenant, f"t-{uuid.uuid4().hex[:12]}"
    a, b = make_client(a_id), make_client(b_id)
    a_queue = a.post(
        f"/client/{a_id}/task_scheduler/",
        json={"name": SECRETS[0], "comment": SECRETS[1], "status": "off"},
    ).json()["id"]
    a_task = a.post(
        f"/client/{a_id}/task_scheduler/{a_queue}/tasks/",
        json={"tasks": [{"name": SECRETS[2], "a_number": SECRETS[3], "b_number": "101"}]},
    ).json()[0]["id"]
    b_queue = b.post(f"/client/{b_id}/task_scheduler/", json={"name": "bravo"}).json()["id"]
    b_task = b.post(
        f"/client/{b_id}/task_scheduler/{b_queue}/tasks/", json={"tasks": [TASK]}
    ).json()[0]["id"]
    return World(a_id, a, a_queue, a_task, b_id, b, b_queue, b_task)


def call(
    client: httpx.Client, endpoint: str, owner: str, queue: int, task: int, query: str = ""
) -> httpx.Response:
    """One request to one of the per-queue endpoints."""
    base = f"/client/{owner}/task_scheduler/{queue}"
    method, path, body = {
        "get-queue": ("GET", base, None),
        "put-queue": ("PUT", base, {"comment": "hijacked", "status": "on"}),
        "delete-queue": ("DELETE", base, None),
        "add-tasks": ("POST", f"{base}/tasks/", {"tasks": [TASK]}),
        "list-tasks": ("GET", f"{base}/task/", None),
        "get-task": ("GET", f"{base}/task/{task}", None),
        "delete-task": ("DELETE", f"{base}/task/{task}", None),
    }[endpoint]
    return client.request(method, path + (f"?{query}" if query else ""), json=body)


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    """A JSON error with one of the given statuses that shows none of A's data."""
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["message"], str)
    for secret in SECRETS:
        assert secret not in response.text


# --- B reaching for A's ids --------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("as_me", [False, True], ids=["own-id", "at-me"])
def test_b_on_its_own_path_with_a_ids_gets_404(world: World, endpoint: str, as_me: bool) -> None:
    before = world.a_state()
    owner = "@me" if as_me else world.b_id

    response = call(world.b, endpoint, owner, world.a_queue, world.a_task)

    assert_refused(response, 404)
    assert world.a_state() == before


@pytest.mark.parametrize("endpoint", ["get-task", "delete-task"])
def test_b_cannot_reach_a_task_through_its_own_queue(world: World, endpoint: str) -> None:
    before = world.a_state()

    response = call(world.b, endpoint, world.b_id, world.b_queue, world.a_task)

    assert_refused(response, 404)
    assert world.a_state() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_b_token_on_a_path_is_refused(world: World, endpoint: str) -> None:
    before = world.a_state()

    response = call(world.b, endpoint, world.a_id, world.a_queue, world.a_task)

    assert_refused(response, 403, 404)
    assert world.a_state() == before


def test_b_token_cannot_list_or_create_under_a(world: World) -> None:
    before = world.a_state()
    path = f"/client/{world.a_id}/task_scheduler/"

    assert_refused(world.b.get(path), 403, 404)
    assert_refused(world.b.post(path, json={"name": "planted"}), 403, 404)
    assert world.a_state() == before


# --- overrides: query parameters and body fields that shadow path variables -------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("owner", ["b", "@me"])
def test_client_id_query_override_never_reaches_a(world: World, endpoint: str, owner: str) -> None:
    before = world.a_state()
    path_owner = world.b_id if owner == "b" else owner

    response = call(
        world.b, endpoint, path_owner, world.a_queue, world.a_task, f"client_id={world.a_id}"
    )

    assert_refused(response, 400, 403, 404)
    assert world.a_state() == before


@pytest.mark.parametrize("owner", ["b", "@me"])
def test_client_id_query_override_cannot_list_or_create_under_a(world: World, owner: str) -> None:
    before = world.a_state()
    path = f"/client/{world.b_id if owner == 'b' else owner}/task_scheduler/"
    query = {"client_id": world.a_id}

    assert_refused(world.b.get(path, params=query), 400, 403, 404)
    assert_refused(world.b.post(path, params=query, json={"name": "planted"}), 400, 403, 404)
    assert world.a_state() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_scheduler_id_query_override_never_reaches_a(world: World, endpoint: str) -> None:
    before = world.a_state()

    response = call(
        world.b,
        endpoint,
        world.b_id,
        world.b_queue,
        world.b_task,
        f"scheduler_id={world.a_queue}&task_id={world.a_task}",
    )

    assert_refused(response, 400, 403, 404)
    assert world.a_state() == before


@pytest.mark.parametrize(
    ("method", "suffix", "extra"),
    [
        ("POST", "", {"client_id": "A"}),
        ("PUT", "/{b_queue}", {"client_id": "A"}),
        ("PUT", "/{b_queue}", {"scheduler_id": "a_queue"}),
        ("POST", "/{b_queue}/tasks/", {"scheduler_id": "a_queue"}),
        ("POST", "/{b_queue}/tasks/", {"client_id": "A"}),
    ],
    ids=["create-client", "put-client", "put-queue", "add-queue", "add-client"],
)
def test_body_fields_never_override_the_path(
    world: World, method: str, suffix: str, extra: dict[str, str]
) -> None:
    before = world.a_state()
    values = {"A": world.a_id, "a_queue": world.a_queue}
    body: dict[str, Any] = {k: values[v] for k, v in extra.items()}
    if suffix.endswith("tasks/"):
        body["tasks"] = [TASK]
    else:
        body["comment"] = "hijacked"
    path = f"/client/{world.b_id}/task_scheduler" + suffix.format(b_queue=world.b_queue)

    response = world.b.request(method, path, json=body)

    # Either refused, or applied to B's own resources only.
    if response.status_code != 200:
        assert_refused(response, 400, 403, 404)
    for secret in SECRETS:
        assert secret not in response.text
    assert world.a_state() == before


def test_each_tenant_lists_only_its_own(world: World) -> None:
    a_list = world.a.get(f"/client/{world.a_id}/task_scheduler/").json()
    b_list = world.b.get(f"/client/{world.b_id}/task_scheduler/").json()
    b_me = world.b.get("/client/@me/task_scheduler/")

    assert [q["id"] for q in a_list] == [world.a_queue]
    assert [q["id"] for q in b_list] == [world.b_queue]
    assert b_me.json() == b_list
    for secret in SECRETS:
        assert secret not in b_me.text


def test_a_sees_its_queue_untouched_after_b_tried_everything(world: World) -> None:
    for endpoint in ENDPOINTS:
        for owner in (world.b_id, "@me", world.a_id):
            call(world.b, endpoint, owner, world.a_queue, world.a_task)

    queue = world.a.get(f"/client/{world.a_id}/task_scheduler/{world.a_queue}").json()
    assert queue["name"] == SECRETS[0]
    assert queue["comment"] == SECRETS[1]
    assert queue["status"] == "off"
    tasks = world.a.get(f"/client/{world.a_id}/task_scheduler/{world.a_queue}/task/").json()
    assert [t["id"] for t in tasks] == [world.a_task]


# --- authentication ----------------------------------------------------------------------------


def claims(sub: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600} | changes


def stack_key(stack: Stack) -> bytes:
    return (stack.settings.state_dir / PRIVATE_KEY).read_bytes()


def unsigned(payload: dict[str, Any]) -> str:
    """A token with `"alg": "none"` and an empty signature."""
    header = {"alg": "none", "typ": "JWT", "kid": KEY_ID}
    return ".".join(b64(json.dumps(part).encode()) for part in (header, payload)) + "."


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def foreign_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


TokenMaker = Callable[[Stack, str], str]
BAD_TOKENS: dict[str, TokenMaker] = {
    "garbage": lambda stack, sub: "garbage",
    "three-garbage-parts": lambda stack, sub: "aaa.bbb.ccc",
    "other-key-same-kid": lambda stack, sub: jwt.encode(
        claims(sub), foreign_key(), algorithm=ALGORITHM, headers={"kid": KEY_ID}
    ),
    "other-key-no-kid": lambda stack, sub: jwt.encode(claims(sub), foreign_key(), ALGORITHM),
    "expired": lambda stack, sub: mint_token(stack.settings.state_dir, sub, ttl_seconds=-3600),
    "not-yet-valid": lambda stack, sub: jwt.encode(
        claims(sub, nbf=int(time.time()) + 3600), stack_key(stack), ALGORITHM, {"kid": KEY_ID}
    ),
    "wrong-issuer": lambda stack, sub: jwt.encode(
        claims(sub, iss="someone-else"), stack_key(stack), ALGORITHM, {"kid": KEY_ID}
    ),
    "wrong-audience": lambda stack, sub: jwt.encode(
        claims(sub, aud="some-other-api"), stack_key(stack), ALGORITHM, {"kid": KEY_ID}
    ),
    "no-subject": lambda stack, sub: jwt.encode(
        {k: v for k, v in claims(sub).items() if k != "sub"},
        stack_key(stack),
        ALGORITHM,
        {"kid": KEY_ID},
    ),
    "unsigned": lambda stack, sub: unsigned(claims(sub)),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_token_is_401(world: World, make_client: ClientFactory, endpoint: str) -> None:
    anonymous = make_client()

    response = call(anonymous, endpoint, world.a_id, world.a_queue, world.a_task)

    assert_refused(response, 401)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("owner", ["a", "@me"])
def test_no_token_cannot_list_or_create(
    world: World, make_client: ClientFactory, method: str, owner: str
) -> None:
    before = world.a_state()
    path = f"/client/{world.a_id if owner == 'a' else owner}/task_scheduler/"

    response = make_client().request(method, path, json={} if method == "POST" else None)

    assert_refused(response, 401)
    assert world.a_state() == before


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_a_bad_token_is_401(
    world: World, stack: Stack, make_client: ClientFactory, name: str
) -> None:
    client = make_client(token=BAD_TOKENS[name](stack, world.a_id))
    before = world.a_state()

    for endpoint in ENDPOINTS:
        assert_refused(call(client, endpoint, world.a_id, world.a_queue, world.a_task), 401)
    assert_refused(client.get("/client/@me/task_scheduler/"), 401)
    assert world.a_state() == before


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Token {token}", "{token}"],
    ids=["empty", "bearer-only", "basic", "other-scheme", "no-scheme"],
)
def test_a_malformed_authorization_header_is_401(
    world: World, stack: Stack, make_client: ClientFactory, authorization: str
) -> None:
    header = authorization.format(token=stack.token(world.a_id))
    client = make_client()

    response = client.get(
        f"/client/{world.a_id}/task_scheduler/{world.a_queue}",
        headers={"Authorization": header},
    )

    assert_refused(response, 401)


def test_a_valid_token_from_another_key_for_a_cannot_read_a(
    world: World, make_client: ClientFactory
) -> None:
    forged = jwt.encode(claims(world.a_id), foreign_key(), ALGORITHM, {"kid": KEY_ID})

    response = make_client(token=forged).get(f"/client/{world.a_id}/task_scheduler/")

    assert_refused(response, 401)


def test_a_token_for_a_very_long_client_id_is_never_a_server_error(
    make_client: ClientFactory,
) -> None:
    client = make_client("t-" + "x" * 300)

    response = client.post("/client/@me/task_scheduler/", json={"name": "long"})

    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
