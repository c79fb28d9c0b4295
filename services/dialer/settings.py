"""Settings of the dialer, read once from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import WorkerSettings
from services.dialer.simulated import DEFAULT_RULES, Rule


class SipRoute(BaseModel):
    """Numbers matching `pattern` (a glob; first match wins) go to `proxy` (host:port)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    pattern: str
    proxy: str
    # The host part of the request URI (sip:<number>@<domain>); default: the proxy's host.
    domain: str = ""


class SipAccount(BaseModel):
    """Digest credentials for the trunk (answers 401/407 challenges)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    username: str
    password: SecretStr


class DialerSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="DIALER_")

    metrics_address: str = "127.0.0.1:9480"
    grpc_address: str = "127.0.0.1:50053"
    backend: Literal["simulated", "sip"] = "simulated"
    max_concurrent_calls: int = 1000
    # The longest call (A rings, B rings, they talk: 2 x ring timeout + max call duration)
    # must fit in the dispatcher's attempt lease; an attempt with less lease left is not
    # dialed.
    ring_timeout_seconds: float = 60.0
    max_call_seconds: float = 3600.0
    # JSON list of {"pattern", "behaviour", "ring_seconds", "talk_seconds"}; first match wins.
    simulated_rules: tuple[Rule, ...] = DEFAULT_RULES
    # Seed of the random phones (rules with behaviours or duration ranges); unset: unseeded.
    simulated_seed: int | None = None
    # How long to keep retrying to report a result while NATS or PostgreSQL is down.
    report_retry_seconds: float = 600.0

    # --- the sip backend ---
    sip_transport: Literal["udp", "tcp", "tls"] = "udp"
    # --- TLS (sip_transport=tls) ---
    # PEM bundle of the CAs trusted for SIP peers, instead of the system's store; empty: the
    # system's. Certificates are always verified, names included (services/dialer/sip/tls.py).
    sip_tls_ca_file: str = ""
    # Our own certificate chain and key (PEM; the key may be in the same file): turns on the
    # TLS listener on sip_listen, and is offered to trunks that ask for a client certificate.
    sip_tls_cert_file: str = ""
    sip_tls_key_file: str = ""
    # Where the dialer's SIP socket listens; port 0 picks a free one.
    sip_listen: str = "0.0.0.0:5060"
    # The host put in Via and Contact (the pod's address); default: the listen address, or
    # the local address towards the proxy when listening on 0.0.0.0.
    sip_advertise: str = ""
    # The trunk or PBX every number goes to (host:port), unless a route matches first.
    sip_proxy: str = ""
    sip_domain: str = ""
    # JSON list of {"pattern", "proxy", "domain"}: numbers to send elsewhere, first match wins.
    sip_routes: tuple[SipRoute, ...] = ()
    # JSON object {"0": {"username", "password"}}: the operator's default account, for
    # extension 0 of tenants without an account of their own. Tenants' accounts are in
    # PostgreSQL, per (client_id, extension_id) (python -m services.api.admin account add).
    sip_accounts: dict[int, SipAccount] = Field(default_factory=dict)
    # Send the caller id in P-Asserted-Identity too (for trunks that trust us, RFC 3325).
    sip_assert_identity: bool = False
    # New callbacks started per second (their first INVITEs), smoothed: trunks cap calls per
    # second, and phones that get a burst answer late, which sets off INVITE retransmissions.
    # 0: no cap.
    sip_calls_per_second: float = Field(default=100.0, ge=0)
    # Socket send/receive buffers: bursts of UDP overflow the kernel's defaults.
    sip_socket_buffer_bytes: int = 4 * 1024 * 1024

    @property
    def longest_call_seconds(self) -> float:
        """How long a call can last from dial to hang-up: A rings, then B, then they talk."""
        return 2 * self.ring_timeout_seconds + self.max_call_seconds

    @model_validator(mode="after")
    def _only_the_default_account(self) -> DialerSettings:
        # An account keyed by extension_id alone would be any tenant's for the asking.
        others = sorted(k for k in self.sip_accounts if k != 0)
        if others:
            raise ValueError(
                f'DIALER_SIP_ACCOUNTS may hold only the default account "0", not {others}: '
                "give accounts to tenants with `python -m services.api.admin account add "
                "CLIENT EXTENSION`"
            )
        return self

    @model_validator(mode="after")
    def _tls_key_needs_a_certificate(self) -> DialerSettings:
        if self.sip_tls_key_file and not self.sip_tls_cert_file:
            raise ValueError("DIALER_SIP_TLS_KEY_FILE needs DIALER_SIP_TLS_CERT_FILE")
        return self

    @model_validator(mode="after")
    def _sip_needs_a_destination(self) -> DialerSettings:
        if self.backend == "sip" and not (self.sip_proxy or self.sip_routes):
            raise ValueError("DIALER_BACKEND=sip needs DIALER_SIP_PROXY or DIALER_SIP_ROUTES")
        return self
