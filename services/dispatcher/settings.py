"""Settings of the dispatcher, read once from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import WorkerSettings


class DispatcherSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHER_")

    metrics_address: str = "127.0.0.1:9470"
    # Health (standard gRPC health service) for probes.
    grpc_address: str = "127.0.0.1:50052"
    # An attempt without a result after this long counts as lost (failed). It must exceed
    # the longest call a dialer allows (ring timeout + maximum call duration).
    attempt_lease_seconds: float = 3900.0
    # Times an attempt that placed no call (its dial request lost or refused as too late)
    # is dialed again, without spending a try, before the task finishes as not dialed.
    max_redials: int = Field(default=5, ge=0)
    # Tasks are claimed this long before they are due; the dialer holds their requests and
    # dials on time. Their status is `executed` (and `before` is sent) that much early.
    lookahead_seconds: float = Field(default=0.25, ge=0.0, le=5.0)
    # Tasks one pass over the queues with due work may claim in all, shared equally by them;
    # each gets at least claim_batch. Bounds how long a queue that falls due waits for the
    # next pass, and keeps queues fair; a lone busy queue is claimed in batches this big.
    claim_pass_size: int = Field(default=1000, ge=1)
    # The least a queue with due work is given per pass (and lease expiries per transaction).
    claim_batch: int = Field(default=200, ge=1)
    # Callbacks all the dialers can carry at once (dialers x DIALER_MAX_CONCURRENT_CALLS);
    # when they are nearly full, their free slots are shared fairly between tenants. 0: no
    # cap (every claimed task waits in JetStream for a dialer, first come first served).
    dialer_capacity: int = Field(default=1000, ge=0)
    # Share of the dialer capacity no single tenant may hold (at least one slot): a tenant
    # falling due while another fills the dialers starts at once instead of waiting for one
    # of the other's calls to end. 0: a lone tenant may fill them all.
    dialer_reserve_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    # Call results applied per transaction (about: whole messages of results are applied).
    result_batch: int = Field(default=1000, ge=1)
    outbox_batch: int = 500
    # Safety net only: wake-ups come from LISTEN/NOTIFY and the timer to the next due time.
    max_idle_seconds: float = 30.0
    # Finished tasks (with their calls and webhook deliveries) and the calls of deleted tasks
    # are deleted this many days after they finished or ended; 0: kept forever.
    retention_days: float = Field(default=90.0, ge=0.0)
    # How often expired rows are looked for (and deleted in batches).
    housekeeping_interval_seconds: float = Field(default=60.0, gt=0.0)
    # How often the tasks-by-status and consumer-lag gauges are refreshed.
    stats_interval_seconds: float = 15.0
