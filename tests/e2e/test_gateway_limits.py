"""The gateway's defences, through the real Envoy: authentication before the body is read,
and the per-client rate limit."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deploy.envoy.config import EnvoySettings, rate_limit_message, render
from deploy.local.keys import JWKS
from deploy.local.stack import BIN, DESCRIPTOR, Stack
from tests.support.ports import free_port
from tests.support.stacks import StateDirFactory

BODY_BYTES = 8 * 1024 * 1024  # twice the buffer filter's limit


def envoy_stats(admin_port: int) -> dict[str, int]:
    """Envoy's counters and gauges, from its admin endpoint."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/stats", timeout=10).text
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def test_a_request_without_a_token_is_refused_before_its_body_is_read(stack: Stack) -> None:
    """A large body without a token gets 401 on its headers: Envoy's jwt_authn runs before the
    buffer filter, which would otherwise read up to 4 MiB of it (and answer 413 past that)."""
    admin = stack.settings.envoy_admin_port
    before = envoy_stats(admin)
    head = (
        "POST /client/@me/task_scheduler/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.settings.rest_port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    ).encode()
    first_chunk = b" " * 65536
    with socket.create_connection(("127.0.0.1", stack.settings.rest_port)) as sock:
        # A guard against a hang only: the answer comes on the headers, or never.
        sock.settimeout(60)
        # The headers and one chunk of the 8 MiB announced; the rest is never sent, so an
        # answer can only come from a filter that does not wait for the body.
        sock.sendall(head + first_chunk)
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {reply!r}"
            reply += data
        header_block, _, body = reply.partition(b"\r\n\r\n")
        lines = header_block.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        while len(body) < length:
            data = sock.recv(65536)
            assert data
            body += data
    assert lines[0].split(" ")[1] == "401", reply
    error = json.loads(body)
    assert error["code"] == 16
    assert error["details"][0]["reason"] == "UNAUTHENTICATED"
    assert "Jwt is missing" in error["message"]
    after = envoy_stats(admin)
    assert after["http.rest.jwt_authn.denied"] == before["http.rest.jwt_authn.denied"] + 1
    # The buffer filter never saw it (it counts the bodies it refused as too large)...
    assert after["http.rest.downstream_rq_too_large"] == before["http.rest.downstream_rq_too_large"]
    # ...and Envoy read no more than what was sent before the answer: not the 8 MiB.
    received = after["http.rest.downstream_cx_rx_bytes_total"]
    received -= before["http.rest.downstream_cx_rx_bytes_total"]
    assert received <= len(head) + len(first_chunk)


def test_an_authenticated_body_over_4_mib_is_still_refused(stack: Stack) -> None:
    """With a token the body is buffered as before: over 4 MiB is a 413 JSON error."""
    reply = httpx.post(
        f"{stack.rest_url}/client/@me/task_scheduler/",
        content=b" " * BODY_BYTES,
        headers={
            "Authorization": f"Bearer {stack.token('big-body')}",
            "Content-Type": "application/json",
        },
        timeout=60,
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["details"][0]["reason"] == "REQUEST_TOO_LARGE"


def _ready(admin_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


EnvoyFactory = Callable[..., EnvoySettings]


@pytest.fixture
def extra_envoy(stack: Stack, make_state_dir: StateDirFactory) -> Iterator[EnvoyFactory]:
    """Another Envoy in front of the session stack's api processes, rendered by the same code
    as `make run`'s, with settings of the test's choosing."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        *,
        client_requests_per_second: int = 1000,
        client_burst: int = 2000,
        max_connections: int = 100,
    ) -> EnvoySettings:
        folder = make_state_dir("envoy")
        settings = EnvoySettings(
            rest_address="127.0.0.1",
            rest_port=free_port(),
            admin_port=free_port(),
            api_host="127.0.0.1",
            api_port=stack.settings.api_grpc_port,
            api_processes=stack.settings.apis,
            descriptor_file=DESCRIPTOR,
            jwks_file=stack.settings.state_dir / JWKS,
            client_requests_per_second=client_requests_per_second,
            client_burst=client_burst,
            max_connections=max_connections,
        )
        config = folder / "envoy.json"
        config.write_text(json.dumps(render(settings)))
        log = (folder / "envoy.log").open("wb")
        process = subprocess.Popen(
            [str(BIN / "envoy"), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        processes.append(process)
        while not _ready(settings.admin_port):
            assert process.poll() is None, Path(folder / "envoy.log").read_text()
            time.sleep(0.05)
        return settings

    yield start
    for process in processes:
        process.terminate()
        process.wait(15)


def test_a_client_over_its_rate_limit_gets_429_and_others_are_unaffected(
    extra_envoy: EnvoyFactory, stack: Stack
) -> None:
    """Per-client token buckets keyed by the token's subject: A, over its burst, is answered
    429 RATE_LIMITED in the JSON error shape; B, at the same moment, is not."""
    settings = extra_envoy(client_requests_per_second=1, client_burst=3)
    base = f"http://127.0.0.1:{settings.rest_port}"
    client_a = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {stack.token('rate-a')}"}
    )
    client_b = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {stack.token('rate-b')}"}
    )
    with client_a, client_b:
        # A refill of 1 a second cannot keep up with this many requests in a row.
        statuses = []
        for _ in range(100):
            reply = client_a.get("/client/@me/task_scheduler/")
            statuses.append(reply.status_code)
            if reply.status_code != 200:
                break
        assert statuses[-1] == 429, statuses
        assert len(statuses) >= 4  # its burst of 3 went through first
        error = reply.json()
        assert error["code"] == 8
        assert error["message"] == rate_limit_message(settings)
        assert error["details"] == [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMITED",
                "domain": "callback-scheduler",
            }
        ]
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["retry-after"] == "1"
        # B has its own bucket, full: its burst goes through while A is limited.
        for _ in range(3):
            other = client_b.get("/client/@me/task_scheduler/")
            assert other.status_code == 200, other.text
        assert client_a.get("/client/@me/task_scheduler/").status_code == 429
    stats = envoy_stats(settings.admin_port)
    assert stats["per_client.http_local_rate_limit.rate_limited"] >= 2


def test_requests_without_a_token_do_not_use_a_clients_bucket(
    extra_envoy: EnvoyFactory, stack: Stack
) -> None:
    """The rate limit runs after authentication: unauthenticated requests are 401s, and
    they spend no client's tokens."""
    settings = extra_envoy(client_requests_per_second=1, client_burst=2)
    base = f"http://127.0.0.1:{settings.rest_port}"
    for _ in range(5):
        assert httpx.get(f"{base}/client/@me/task_scheduler/").status_code == 401
    token = {"Authorization": f"Bearer {stack.token('rate-c')}"}
    for _ in range(2):
        reply = httpx.get(f"{base}/client/@me/task_scheduler/", headers=token)
        assert reply.status_code == 200, reply.text


def test_connections_over_the_limit_are_refused(extra_envoy: EnvoyFactory) -> None:
    """The overload manager's global_downstream_max_connections: past the limit Envoy closes
    new connections at once (and counts them), and the open ones keep working."""
    settings = extra_envoy(max_connections=2)
    request = b"GET /client/@me/task_scheduler/ HTTP/1.1\r\nHost: x\r\n\r\n"

    def status_of(sock: socket.socket) -> bytes:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]

    address = ("127.0.0.1", settings.rest_port)
    with socket.create_connection(address) as one, socket.create_connection(address) as two:
        one.settimeout(60)
        two.settimeout(60)
        assert status_of(one) == b"HTTP/1.1 401 Unauthorized"
        assert status_of(two) == b"HTTP/1.1 401 Unauthorized"
        with socket.create_connection(address) as three:
            three.settimeout(60)
            try:
                answer = status_of(three)
            except ConnectionError:  # reset, or a broken pipe if the close came first
                answer = b""
            assert answer == b"", answer
        assert status_of(one) == b"HTTP/1.1 401 Unauthorized"
    stats = envoy_stats(settings.admin_port)
    overflow = f"listener.127.0.0.1_{settings.rest_port}.downstream_global_cx_overflow"
    assert stats[overflow] == 1
