"""NATS as the Kubernetes manifests configure it: TLS required, the users of
deploy/k8s/base/nats/auth.conf with passwords from the environment. A service connects with
NATS_USER / NATS_PASSWORD / NATS_TLS_CA_FILE; a client without TLS, or one that does not
trust the CA, gets nowhere."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from deploy import nats_users
from deploy.local.stack import BIN
from services.common import bus
from services.common.settings import WorkerSettings
from tests.support.certs import ServerCertificate, make_server_certificate
from tests.support.ports import free_port


@dataclass(frozen=True)
class TlsNats:
    port: int
    certificate: ServerCertificate
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return f"tls://localhost:{self.port}"


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[TlsNats]:
    certificate = make_server_certificate(tmp_path / "tls", ["localhost", "127.0.0.1"])
    port = free_port()
    (tmp_path / "auth.conf").write_text(nats_users.K8S_AUTH_CONFIG.read_text())
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"tls {{\n  cert_file: {certificate.cert_file}\n  key_file: {certificate.key_file}\n"
        f"  ca_file: {certificate.ca_file}\n  timeout: 5\n}}\n"
        "include auth.conf\n"
        f"jetstream {{\n  store_dir: {tmp_path / 'js'}\n}}\n"
    )
    passwords = {u.name: f"pw{u.name}" for u in nats_users.users_for(local=False)}
    env = {nats_users.user(name).password_variable: pw for name, pw in passwords.items()}
    log = (tmp_path / "nats.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "nats-server"), "-c", str(config)], stdout=log, stderr=log, env=env
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert server.poll() is None, (tmp_path / "nats.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        yield TlsNats(port, certificate, passwords)
    finally:
        server.terminate()
        server.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_service_connects_as_its_user_over_tls(tls_nats: TlsNats) -> None:
    settings = WorkerSettings.model_validate(
        {
            "DATABASE_URL": "postgresql://unused",
            "grpc_address": "127.0.0.1:1",
            "metrics_address": "127.0.0.1:1",
            "NATS_URL": tls_nats.url,
            "NATS_USER": "dispatcher",
            "NATS_PASSWORD": tls_nats.passwords["dispatcher"],
            "NATS_TLS_CA_FILE": str(tls_nats.certificate.ca_file),
        }
    )
    assert tls_nats.passwords["dispatcher"] not in repr(settings)
    client, jetstream = await bus.connect(
        settings.nats_url, "test-tls", settings.nats_login(), create_streams=True
    )
    try:
        assert await bus.publish(jetstream, bus.SUBJECT_DIAL, b"", "tls-1")
        assert client.connected_url is not None and client.connected_url.scheme == "tls"
    finally:
        await client.close()


def test_a_client_without_tls_is_refused(tls_nats: TlsNats) -> None:
    """The server waits for a TLS handshake: a plain CONNECT gets no PONG, only a close."""
    with socket.create_connection(("127.0.0.1", tls_nats.port), timeout=10) as sock:
        with sock.makefile("rb") as reader:
            assert reader.readline().startswith(b"INFO ")
            sock.sendall(b'CONNECT {"user": "dispatcher", "pass": "x"}\r\nPING\r\n')
            rest = reader.read()
    assert b"PONG" not in rest, rest


def test_a_client_that_does_not_trust_the_ca_gets_no_connection(tls_nats: TlsNats) -> None:
    with socket.create_connection(("127.0.0.1", tls_nats.port), timeout=10) as sock:
        info = b""
        while not info.endswith(b"\r\n"):
            info += sock.recv(1)
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")


def test_the_password_is_never_shown(tls_nats: TlsNats) -> None:
    login = bus.NatsLogin("dialer", SecretStr(tls_nats.passwords["dialer"]))
    assert tls_nats.passwords["dialer"] not in repr(login) + str(login)
