"""Settings of the notifier, read once from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import WorkerSettings
from services.notifier.addresses import Policy, parse_networks, parse_ports


class NotifierSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_")

    metrics_address: str = "127.0.0.1:9490"
    grpc_address: str = "127.0.0.1:50080"
    # Master key (a Secret in production): a tenant without a secret of its own signs with
    # HMAC(master, client id), its version 1; tenants' own secrets are stored encrypted with
    # a key derived from it (services/notifier/keyring.py).
    signing_key: SecretStr
    # Where webhooks may go besides public https on ports 80 and 443 (comma lists; the
    # README's "Webhooks"): networks that are not globally routable, networks that may be
    # reached over plain http, and ports ("80,443,8000-8999").
    allowed_networks: str = ""
    http_networks: str = ""
    allowed_ports: str = "80,443"
    # How long a tenant's signing secrets read from the database are used (0: read them for
    # every delivery): a rotation reaches the webhooks within this long.
    secret_cache_seconds: float = Field(default=5.0, ge=0)
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    max_response_bytes: int = 64 * 1024
    max_in_flight: int = 200
    max_in_flight_per_host: int = 8
    max_in_flight_per_tenant: int = 50
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 600.0
    # A task's event waits this long at most for an earlier one that has not arrived (it
    # always should: JetStream redelivers a message a dead notifier held after 30 s).
    missing_event_wait_seconds: float = 600.0

    @property
    def lease_seconds(self) -> float:
        """A delivery in flight is not taken by another notifier for this long."""
        return self.connect_timeout_seconds + self.read_timeout_seconds + 5.0

    @property
    def address_policy(self) -> Policy:
        """Where webhooks may connect (services/notifier/addresses.py)."""
        return Policy(
            allowed_networks=parse_networks(self.allowed_networks.split(",")),
            http_networks=parse_networks(self.http_networks.split(",")),
            allowed_ports=parse_ports(self.allowed_ports),
        )

    @model_validator(mode="after")
    def _policy_parses(self) -> NotifierSettings:
        try:
            self.address_policy  # noqa: B018 - parsed for its errors
        except ValueError as err:
            raise ValueError(
                "NOTIFIER_ALLOWED_NETWORKS, NOTIFIER_HTTP_NETWORKS and NOTIFIER_ALLOWED_PORTS "
                f"are comma lists of networks and ports: {err}"
            ) from None
        return self
