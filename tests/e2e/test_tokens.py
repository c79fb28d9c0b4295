"""Bearer tokens through Envoy and the api: a maximum lifetime, and revocation per client."""

from __future__ import annotations

import time
from datetime import datetime

import grpc
import httpx
import pytest
from scheduler.v1 import scheduler_pb2 as pb
from scheduler.v1 import scheduler_pb2_grpc as pb_grpc

from deploy.local.keys import mint_token, sign_claims
from deploy.local.stack import Stack
from services.api.auth import AUDIENCE, DEFAULT_MAX_LIFETIME_SECONDS, ISSUER
from tests.support.stacks import ClientFactory


def refused(reply: httpx.Response, words: str) -> None:
    assert reply.status_code == 401, reply.text
    error = reply.json()
    assert error["code"] == 16
    assert error["details"][0]["reason"] == "UNAUTHENTICATED"
    assert words in error["message"], error["message"]


def test_a_token_valid_for_longer_than_the_maximum_is_refused(
    stack: Stack, make_client: ClientFactory, tenant: str
) -> None:
    state = stack.settings.state_dir
    too_long = make_client(token=mint_token(state, tenant, ttl_seconds=100 * 365 * 24 * 3600))
    refused(too_long.get("/client/@me/task_scheduler/"), "token lifetime too long")
    just_over = make_client(
        token=mint_token(state, tenant, ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS + 1)
    )
    refused(just_over.get("/client/@me/task_scheduler/"), "token lifetime too long")
    longest = make_client(token=mint_token(state, tenant, ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS))
    assert longest.get("/client/@me/task_scheduler/").status_code == 200


def test_a_token_without_an_issue_or_expiry_time_is_refused(
    stack: Stack, make_client: ClientFactory, tenant: str
) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": tenant, "iat": now, "exp": now + 600}
    for missing in ("iat", "exp"):
        token = sign_claims(
            stack.settings.state_dir, {k: v for k, v in claims.items() if k != missing}
        )
        refused(make_client(token=token).get("/client/@me/task_scheduler/"), f'"{missing}"')


def test_revoked_tokens_are_refused_and_new_ones_accepted(
    stack: Stack, make_client: ClientFactory, tenant: str
) -> None:
    old = make_client(tenant)
    created = old.post("/client/@me/task_scheduler/", json={"name": "before"})
    assert created.status_code == 200, created.text
    bystander = make_client(f"{tenant}-other")
    assert bystander.get("/client/@me/task_scheduler/").status_code == 200

    shown = stack.admin("revoke-tokens", tenant)

    not_before = datetime.fromisoformat(shown["tokens_not_before"])
    refused(old.get("/client/@me/task_scheduler/"), "token revoked")
    refused(old.post("/client/@me/task_scheduler/", json={"name": "after"}), "token revoked")
    # A token issued in the second of the revocation is refused too: iat is whole seconds.
    last_second = int(not_before.timestamp()) - 1
    same_second = sign_claims(
        stack.settings.state_dir,
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": tenant,
            "iat": last_second,
            "exp": last_second + 600,
        },
    )
    refused(make_client(token=same_second).get("/client/@me/task_scheduler/"), "token revoked")
    # Another client's tokens are untouched.
    assert bystander.get("/client/@me/task_scheduler/").status_code == 200
    # The first second a new token may be issued in.
    while time.time() < not_before.timestamp():
        time.sleep(0.05)
    new = make_client(tenant)
    listed = new.get("/client/@me/task_scheduler/")
    assert listed.status_code == 200, listed.text
    assert [q["name"] for q in listed.json()] == ["before"]
    assert stack.admin("show", tenant)["tokens_not_before"] == shown["tokens_not_before"]


def test_the_grpc_face_refuses_revoked_and_over_long_tokens(stack: Stack, tenant: str) -> None:
    """A caller inside the cluster that skips Envoy meets the same checks in the api."""
    state = stack.settings.state_dir
    with grpc.insecure_channel(stack.api_grpc_target) as channel:
        stub = pb_grpc.TaskSchedulerStub(channel)

        def list_as(token: str) -> None:
            stub.ListQueues(
                pb.ListQueuesRequest(client_id="@me"),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )

        old = mint_token(state, tenant)
        list_as(old)
        with pytest.raises(grpc.RpcError) as too_long:
            list_as(mint_token(state, tenant, ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS + 1))
        assert too_long.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token lifetime too long" in str(too_long.value.details())
        stack.admin("revoke-tokens", tenant)
        with pytest.raises(grpc.RpcError) as revoked:
            list_as(old)
        assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token revoked" in str(revoked.value.details())
