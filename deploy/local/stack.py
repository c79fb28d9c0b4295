"""`make run`: start the whole system locally, in order, and stop it cleanly.

Written by hand rather than with a Procfile runner (honcho, circus) because start-up has
gates the runners lack: PostgreSQL must run and be migrated before the api starts, the api
must report SERVING before Envoy takes traffic, and the embedded PostgreSQL needs its cluster
created first (pgserver's binaries, embedded_postgres.py). The tests start the same stack
through this module.

Nothing outlives the launcher: each child gets a parent-death signal (lifeline.py), the state
folder records what runs (ledger.py) so that the next start stops what a killed launcher left,
and ports are checked before anything starts (ports.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy import nats_users
from deploy.envoy.config import EnvoySettings, render
from deploy.local import embedded_postgres
from deploy.local.keys import (
    ensure_db_role_passwords,
    ensure_keys,
    ensure_nats_passwords,
    ensure_webhook_signing_key,
    mint_token,
)
from deploy.local.ledger import Ledger, ProcessRecord, StateFolderBusy, stop_all
from deploy.local.lifeline import with_lifeline
from deploy.local.ports import PortClaim, PortInUse, check_free, describe, taken
from services.common import db_roles
from services.common.bus import NatsLogin

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DESCRIPTOR = ROOT / "gen" / "scheduler.pb"
EMBEDDED_DATABASE = "callback_scheduler"
DEMO_CALLER_ID = "+15550000000"

log = logging.getLogger("stack")


# Locally, webhooks may go to receivers on this machine (127.0.0.1, plain http, any port
# from 1024), besides public https on 80/443 as anywhere; the environment (or a test's
# service_env) overrides each. Kubernetes allows none of these (README, "Webhooks").
LOCAL_WEBHOOK_TARGETS = {
    name: os.environ.get(name, value)
    for name, value in {
        "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.1/32",
        "NOTIFIER_HTTP_NETWORKS": "127.0.0.1/32",
        "NOTIFIER_ALLOWED_PORTS": "80,443,1024-65535",
    }.items()
}


class StackSettings(BaseSettings):
    """Ports and places of the local stack; every one can be overridden from the environment."""

    model_config = SettingsConfigDict(populate_by_name=True)

    state_dir: Path = Field(default=ROOT / ".local", validation_alias="STATE_DIR")
    rest_address: str = Field(default="127.0.0.1", validation_alias="REST_ADDRESS")
    rest_port: int = Field(default=8080, validation_alias="REST_PORT")
    envoy_admin_port: int = Field(default=9901, validation_alias="ENVOY_ADMIN_PORT")
    api_grpc_port: int = Field(default=50051, validation_alias="API_GRPC_PORT")
    # api processes behind Envoy (one Python process uses one core); process i listens on
    # API_GRPC_PORT + i.
    apis: int = Field(default=1, ge=1, le=6, validation_alias="APIS")
    nats_port: int = Field(default=4222, validation_alias="NATS_PORT")
    # Replicas of the scaled services; replica i serves gRPC health on base port + i.
    dispatchers: int = Field(default=1, ge=0, le=10, validation_alias="DISPATCHERS")
    dialers: int = Field(default=1, ge=0, le=10, validation_alias="DIALERS")
    notifiers: int = Field(default=1, ge=0, le=10, validation_alias="NOTIFIERS")
    dispatcher_grpc_port: int = Field(default=50060, validation_alias="DISPATCHER_GRPC_PORT")
    dialer_grpc_port: int = Field(default=50070, validation_alias="DIALER_GRPC_PORT")
    notifier_grpc_port: int = Field(default=50080, validation_alias="NOTIFIER_GRPC_PORT")
    # Prometheus /metrics: api on this port, dispatcher i on +6+i, dialer i on +16+i,
    # notifier i on +26+i (9464, 9470.., 9480.., 9490.. by default).
    metrics_port: int = Field(default=9464, validation_alias="METRICS_PORT")
    # Unset: an embedded PostgreSQL (pgserver) keeps its data in <state_dir>/pgdata.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    # Each service logs in as its own PostgreSQL role with only its grants
    # (services/common/db_roles.py). "auto": when DATABASE_URL's user may create roles (the
    # embedded server's does), else every service uses DATABASE_URL; "on": required.
    db_roles: Literal["auto", "on", "off"] = Field(default="auto", validation_alias="DB_ROLES")
    # Each service logs in to NATS as its own user, allowed only its subjects
    # (deploy/nats_users.py); "off": NATS without users (anyone reaching it may do anything).
    nats_users: Literal["on", "off"] = Field(default="on", validation_alias="NATS_USERS")
    start_timeout: float = Field(default=60.0, validation_alias="STACK_START_TIMEOUT")
    # Envoy's per-client rate limit (the token's client_id): refill per second and burst.
    client_rate_limit: int = Field(default=1000, ge=1, validation_alias="CLIENT_RATE_LIMIT")
    client_rate_burst: int = Field(default=2000, ge=1, validation_alias="CLIENT_RATE_BURST")


class StackError(RuntimeError):
    """A part of the stack failed to start or died."""


# What `make run` reports in one line, without a traceback.
START_ERRORS = (StackError, PortInUse, StateFolderBusy)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None
    stop_signal: signal.Signals = signal.SIGTERM
    ports: tuple[PortClaim, ...] = ()

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    """The running system: PostgreSQL, NATS, the api service and Envoy."""

    settings: StackSettings
    # None: children write to this terminal; a folder: one log file per child (tests).
    log_dir: Path | None = None
    # Extra environment for the services (tests tune leases and simulated phones here).
    service_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    # The DATABASE_URL each service logs in with (its role's), when roles are on.
    service_database_urls: dict[str, str] = field(default_factory=dict)
    _children: list[_Child] = field(default_factory=list)
    _ledger: Ledger | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{self.settings.rest_address}:{self.settings.rest_port}"

    @property
    def api_grpc_target(self) -> str:
        return self.api_target(0)

    def api_target(self, index: int) -> str:
        return f"127.0.0.1:{self.settings.api_grpc_port + index}"

    def token(self, client_id: str) -> str:
        return mint_token(self.settings.state_dir, client_id)

    def start(self) -> None:
        """Start every part in order; on any failure stop what was started and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(state)
        ledger.acquire()
        self._ledger = ledger
        for line in clean_up_leftovers(ledger, self.settings):
            log.warning("%s", line)
        ledger.save()
        check_free(self.port_claims())
        self.database_url = self.settings.database_url or self._start_embedded_postgres()
        self._migrate()
        self._grant_roles()
        jwks = ensure_keys(state)

        self.start_nats()
        for index in range(self.settings.apis):
            self.start_api(index)
        for index in range(self.settings.dispatchers):
            self.start_replica("dispatcher", index)
        for index in range(self.settings.dialers):
            self.start_replica("dialer", index)
        for index in range(self.settings.notifiers):
            self.start_replica("notifier", index)

        envoy_config = state / "envoy.json"
        envoy_settings = EnvoySettings(
            rest_address=self.settings.rest_address,
            rest_port=self.settings.rest_port,
            admin_port=self.settings.envoy_admin_port,
            api_host="127.0.0.1",
            api_port=self.settings.api_grpc_port,
            api_processes=self.settings.apis,
            descriptor_file=DESCRIPTOR,
            jwks_file=jwks,
            client_requests_per_second=self.settings.client_rate_limit,
            client_burst=self.settings.client_rate_burst,
        )
        envoy_config.write_text(json.dumps(render(envoy_settings), indent=2))
        self._spawn(
            "envoy",
            [
                str(BIN / "envoy"),
                *("-c", str(envoy_config)),
                *("--disable-hot-restart", "--log-level", "warn"),
            ],
            ports=self._claims("envoy"),
        )
        self._wait("envoy", lambda: _http_ok(f"http://127.0.0.1:{envoy_settings.admin_port}/ready"))

    def start_nats(self) -> None:
        """Start NATS with JetStream (file storage in the state dir) and its users, and wait
        for it (also to restart it)."""
        state = self.settings.state_dir
        nats_dir = state / "nats"
        nats_dir.mkdir(exist_ok=True)
        argv = [
            str(BIN / "nats-server"),
            *("-js", "-sd", str(nats_dir)),
            *("-a", "127.0.0.1", "-p", str(self.settings.nats_port)),
        ]
        env = {}
        if self.settings.nats_users == "on":
            # The users' table as the manifests have it (plus the local admin); each password
            # reaches the server through its environment, as from a Secret in Kubernetes.
            config = state / "nats-auth.conf"
            config.write_text(nats_users.auth_config(local=True))
            argv[1:1] = ["-c", str(config)]
            env = {
                nats_users.user(name).password_variable: password
                for name, password in self._nats_passwords().items()
            }
        self._spawn("nats", argv, env, ports=self._claims("nats"))
        self._wait("nats", lambda: _tcp_open(self.settings.nats_port))

    def _nats_passwords(self) -> dict[str, str]:
        names = tuple(u.name for u in nats_users.users_for(local=True))
        return ensure_nats_passwords(self.settings.state_dir, names)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.settings.nats_port}"

    def nats_login(self, user: str) -> NatsLogin:
        """How `user` (a service's, "monitor" or "admin") logs in to this stack's NATS;
        anonymous when NATS_USERS is off."""
        if self.settings.nats_users == "off":
            return NatsLogin()
        return NatsLogin(user, SecretStr(self._nats_passwords()[user]))

    def _nats_env(self, kind: str) -> dict[str, str]:
        login = self.nats_login(kind)
        if login.user is None or login.password is None:
            return {}
        return {"NATS_USER": login.user, "NATS_PASSWORD": login.password.get_secret_value()}

    def start_api(self, index: int = 0) -> None:
        """Start api process `index` ("api", then "api-1", ...) and wait until it reports
        SERVING (also to restart it)."""
        jwks = ensure_keys(self.settings.state_dir)
        name = "api" if index == 0 else f"api-{index}"
        self._spawn(
            name,
            [sys.executable, "-m", "services.api"],
            env={
                **self.service_env,
                "DATABASE_URL": self.service_database_url("api"),
                "API_GRPC_ADDRESS": self.api_target(index),
                "API_METRICS_ADDRESS": self._metrics_address("api", index),
                "API_JWKS_FILE": str(jwks),
            },
            ports=self._claims("api", index),
        )
        self._wait(name, lambda: _grpc_serving(self.api_target(index)))

    def replica_target(self, kind: str, index: int) -> str:
        base = {
            "dispatcher": self.settings.dispatcher_grpc_port,
            "dialer": self.settings.dialer_grpc_port,
            "notifier": self.settings.notifier_grpc_port,
        }[kind]
        return f"127.0.0.1:{base + index}"

    def metrics_url(self, kind: str, index: int = 0) -> str:
        offset = {"api": 0, "dispatcher": 6, "dialer": 16, "notifier": 26}[kind]
        return f"http://127.0.0.1:{self.settings.metrics_port + offset + index}/metrics"

    def _metrics_address(self, kind: str, index: int = 0) -> str:
        return self.metrics_url(kind, index).removeprefix("http://").removesuffix("/metrics")

    def port_claims(self) -> list[PortClaim]:
        """Every TCP port the stack will listen on, with the setting that moves each."""
        settings = self.settings
        counts = {
            "api": settings.apis,
            "dispatcher": settings.dispatchers,
            "dialer": settings.dialers,
            "notifier": settings.notifiers,
        }
        claims = [*self._claims("nats"), *self._claims("envoy")]
        for kind, count in counts.items():
            for index in range(count):
                claims += self._claims(kind, index)
        return claims

    def _claims(self, kind: str, index: int = 0) -> tuple[PortClaim, ...]:
        settings = self.settings
        if kind == "nats":
            return (PortClaim(settings.nats_port, "NATS", "NATS_PORT"),)
        if kind == "envoy":
            return (
                PortClaim(
                    settings.rest_port, "REST API (Envoy)", "REST_PORT", settings.rest_address
                ),
                PortClaim(settings.envoy_admin_port, "Envoy admin", "ENVOY_ADMIN_PORT"),
            )
        name = ("api" if index == 0 else f"api-{index}") if kind == "api" else f"{kind}-{index}"
        if kind == "api":
            grpc_port, grpc_setting = settings.api_grpc_port + index, "API_GRPC_PORT"
        else:
            grpc_port = int(self.replica_target(kind, index).rsplit(":", 1)[1])
            grpc_setting = f"{kind.upper()}_GRPC_PORT"
        metrics_offset = {"api": 0, "dispatcher": 6, "dialer": 16, "notifier": 26}[kind] + index
        return (
            PortClaim(grpc_port, f"{name} gRPC", _plus(grpc_setting, index)),
            PortClaim(
                settings.metrics_port + metrics_offset,
                f"{name} metrics",
                _plus("METRICS_PORT", metrics_offset),
            ),
        )

    def start_replica(self, kind: str, index: int) -> None:
        """Start replica `index` of the dispatcher or the dialer and wait until it serves."""
        name, target = f"{kind}-{index}", self.replica_target(kind, index)
        prefix = kind.upper()
        self._spawn(
            name,
            [sys.executable, "-m", f"services.{kind}"],
            env={
                # The dialers' room in all, shared fairly between tenants when nearly full.
                "DISPATCHER_DIALER_CAPACITY": str(self._dialer_capacity()),
                **LOCAL_WEBHOOK_TARGETS,
                **self.service_env,
                "DATABASE_URL": self.service_database_url(kind),
                "NATS_URL": self.nats_url,
                **self._nats_env(kind),
                f"{prefix}_GRPC_ADDRESS": target,
                f"{prefix}_METRICS_ADDRESS": self._metrics_address(kind, index),
                "NOTIFIER_SIGNING_KEY": ensure_webhook_signing_key(self.settings.state_dir),
            },
            ports=self._claims(kind, index),
        )
        self._wait(name, lambda: _grpc_serving(target))

    def _dialer_capacity(self) -> int:
        per_dialer = {**os.environ, **self.service_env}.get("DIALER_MAX_CONCURRENT_CALLS", "1000")
        return self.settings.dialers * int(per_dialer)

    def admin(self, *argv: str) -> Any:
        """Run the operator's tenant command (python -m services.api.admin) on this stack's
        database; what it printed (JSON)."""
        result = subprocess.run(
            [sys.executable, "-m", "services.api.admin", *argv],
            cwd=ROOT,
            env={**os.environ, **self.service_env, "DATABASE_URL": self.database_url},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"admin {' '.join(argv)} failed: {result.stderr[-2000:]}")
        return json.loads(result.stdout)

    def pid(self, name: str) -> int:
        return next(c.process.pid for c in self._children if c.name == name)

    def kill_child(self, name: str) -> None:
        """SIGKILL one part, as a crash would (tests of recovery)."""
        for child in [c for c in self._children if c.name == name]:
            child.process.kill()
            child.process.wait()
            self._forget(child)

    def _start_embedded_postgres(self) -> str:
        _set_runtime_dir(self.settings.state_dir)
        server = embedded_postgres.prepare(self.settings.state_dir / "pgdata")
        self._spawn(
            "postgres",
            server.argv,
            user=server.user,
            stop_signal=embedded_postgres.STOP_SIGNAL,
            # Its log goes to a file even under `make run`: it is chatty and rarely needed.
            log_path=self.settings.state_dir / "postgres.log",
        )
        admin_uri = server.uri("postgres")
        self._wait("postgres", lambda: _postgres_ready(admin_uri))
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
        return server.uri(EMBEDDED_DATABASE)

    def _migrate(self) -> None:
        result = subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": self.database_url},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"database migration failed:\n{result.stderr[-3000:]}")

    def _grant_roles(self) -> None:
        """Give each service its own role (see StackSettings.db_roles)."""
        wanted = self.settings.db_roles
        able = wanted == "on" or db_roles.can_create_roles(self.database_url)
        if wanted == "off" or not able:
            log.warning("every service logs in as the database owner (DB_ROLES=%s)", wanted)
            return
        passwords = ensure_db_role_passwords(self.settings.state_dir, db_roles.SERVICES)
        db_roles.apply(self.database_url, passwords)
        self.service_database_urls = {
            service: db_roles.service_url(self.database_url, service, password)
            for service, password in passwords.items()
        }

    def service_database_url(self, service: str) -> str:
        return self.service_database_urls.get(service, self.database_url)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        ports: tuple[PortClaim, ...] = (),
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        log_path: Path | None = None,
    ) -> None:
        if self.log_dir is not None:
            log_path = self.log_dir / f"{name}.log"
        output: IO[bytes] | None = None if log_path is None else log_path.open("ab")
        process = subprocess.Popen(
            # If the launcher dies without stopping it, the kernel sends the stop signal.
            with_lifeline(argv, stop_signal),
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # Own session: a Ctrl-C reaches only this launcher, which stops the rest in order.
            start_new_session=True,
            user=user,
        )
        if output is not None:
            output.close()
        self._children.append(_Child(name, process, log_path, stop_signal, ports))
        if self._ledger is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self._ledger.add(ProcessRecord.of(name, process.pid, stop_signal))

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        child = next(c for c in self._children if c.name == name)
        deadline = time.monotonic() + self.settings.start_timeout
        while not ready():
            if child.process.poll() is not None:
                claim = taken(child.ports)
                if claim is not None:  # another program got the port after the check
                    raise PortInUse(describe(claim))
                raise StackError(f"{name} exited with {child.process.returncode}\n{child.tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} not ready after {self.settings.start_timeout}s")
            time.sleep(0.05)

    def dead_child(self) -> _Child | None:
        return next((c for c in self._children if c.process.poll() is not None), None)

    def stop_child(self, name: str, grace: float = 15.0) -> None:
        """SIGTERM one part and wait for it (SIGKILL after the grace period)."""
        for child in [c for c in self._children if c.name == name]:
            _terminate(child.process, grace, child.stop_signal)
            self._forget(child)

    def stop(self) -> None:
        """Stop every part in reverse order of start (PostgreSQL last), replicas of one kind
        together; safe to call twice."""
        while self._children:
            kind = self._children[-1].name.split("-")[0]
            group = [c for c in self._children if c.name.split("-")[0] == kind]
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(child.stop_signal)
            for child in group:
                _terminate(child.process, 15.0, child.stop_signal)
                self._forget(child)
        if self._ledger is not None:
            self._ledger.release()
            self._ledger = None

    def _forget(self, child: _Child) -> None:
        self._children.remove(child)
        if self._ledger is not None:
            self._ledger.remove(child.process.pid)


def clean_up_leftovers(ledger: Ledger, settings: StackSettings) -> list[str]:
    """Stop what an earlier launcher of this state folder left running (the caller holds the
    folder's lock); return what was done, one line each."""
    done = []
    leftovers = ledger.leftovers()
    if leftovers:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in leftovers)
        done.append(f"stopping what an earlier launcher left running: {names}")
        survivors = stop_all(leftovers, grace=15.0)
        if survivors:
            pids = " ".join(str(r.pid) for r in survivors)
            raise StackError(
                f"could not stop processes an earlier launcher left running; "
                f"stop them by hand (kill -9 {pids}) and start again"
            )
    if settings.database_url is None:
        pid = embedded_postgres.stop_leftover(settings.state_dir / "pgdata")
        if pid is not None:
            done.append(f"stopped a PostgreSQL (pid {pid}) left running on {settings.state_dir}")
    return done


def _plus(setting: str, offset: int) -> str:
    return setting if offset == 0 else f"{setting} + {offset}"


def _set_runtime_dir(state_dir: Path) -> None:
    # pgserver reads the user's runtime dir when it is imported (a lock file, socket fallback).
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = state_dir / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _postgres_ready(uri: str) -> bool:
    try:
        with psycopg.connect(uri, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


def _terminate(
    process: subprocess.Popen[bytes], grace: float, stop_signal: signal.Signals = signal.SIGTERM
) -> None:
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback only)
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    settings = StackSettings()
    stack = Stack(settings)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    started = time.monotonic()
    try:
        stack.start()
    except START_ERRORS as err:
        log.error("callback-scheduler cannot start: %s", err)
        return 1
    try:
        # The demo tenant of the README's examples owns the caller id they show.
        stack.admin("caller-id", "add", "demo", DEMO_CALLER_ID)
    except StackError as err:
        log.error("callback-scheduler cannot onboard its demo tenant: %s", err)
        stack.stop()
        return 1
    where = "embedded PostgreSQL" if settings.database_url is None else "DATABASE_URL"
    token = stack.token("demo")
    log.info(
        "\ncallback-scheduler is ready in %.1fs (database: %s)\n"
        "  REST API:      %s\n"
        "  api gRPC:      %s (%d process(es), on consecutive ports)\n"
        "  NATS:          nats://127.0.0.1:%d (users: %s)\n"
        "  dispatchers:   %d (gRPC health from port %d), dialers: %d (from port %d)\n"
        "  notifiers:     %d (from port %d); webhook secret: make webhook-secret CLIENT=<id>\n"
        "  metrics:       %s (api), dispatchers from :%d, dialers :%d, notifiers :%d\n"
        "  Envoy admin:   http://127.0.0.1:%d\n"
        "  token (demo):  %s\n"
        "  console:       %s/console/#token=%s (signs in as demo)\n"
        "  command line:  CALLBACKS_TOKEN=<token> .venv/bin/callbacks --help\n\n"
        "Try:  curl -H 'Authorization: Bearer <token>' %s/client/demo/task_scheduler/\n"
        "Ctrl-C stops everything.",
        time.monotonic() - started,
        where,
        stack.rest_url,
        stack.api_grpc_target,
        settings.apis,
        settings.nats_port,
        "off"
        if settings.nats_users == "off"
        else f"passwords in {settings.state_dir / 'nats-passwords.json'}",
        settings.dispatchers,
        settings.dispatcher_grpc_port,
        settings.dialers,
        settings.dialer_grpc_port,
        settings.notifiers,
        settings.notifier_grpc_port,
        stack.metrics_url("api"),
        settings.metrics_port + 6,
        settings.metrics_port + 16,
        settings.metrics_port + 26,
        settings.envoy_admin_port,
        token,
        stack.rest_url,
        token,
        stack.rest_url,
    )
    exit_code = 0
    while not stopping:
        dead = stack.dead_child()
        if dead is not None:
            log.error("%s exited with %s; stopping", dead.name, dead.process.returncode)
            exit_code = 1
            break
        time.sleep(0.2)
    log.info("stopping callback-scheduler")
    stack.stop()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
