"""Settings shared by every service, read from the environment with the ``FAXBOX_`` prefix.

Each service composes its own ``Settings`` class from these parts, so one variable
(``FAXBOX_AMQP_URL``, ``FAXBOX_MONGO_URL`` …) means the same thing everywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from faxbox.shared import crashpoints

ENV_PREFIX = "FAXBOX_"


class _FaxboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


class BrokerSettings(_FaxboxSettings):
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange_prefix: str = Field(
        default="faxbox",
        description="Prefix of every exchange and queue name; tests use a unique one.",
    )
    prefetch: int = Field(default=16, ge=1, le=1000)
    retry_delays_s: tuple[int, ...] = Field(
        default=(5, 30, 120),
        description=(
            "Delays of the transient-retry queues (rounded up to the retry ladder); the "
            "last one repeats."
        ),
    )
    max_transient_attempts: int = Field(default=5, ge=1)
    infrastructure_backoff_max_s: int = Field(
        default=60,
        ge=1,
        description=(
            "Longest wait between tries while the database or broker is down (rounded up "
            "to the retry ladder); such waits go on for as long as the outage lasts."
        ),
    )
    delivery_limit: int = Field(
        default=20,
        ge=1,
        description="Redeliveries (e.g. consumer crashes) before the broker dead-letters.",
    )
    connect_timeout_s: float = Field(
        default=0.0,
        ge=0,
        description=(
            "How long a service starting while the database or broker is down waits for "
            "it before it exits with 1; 0: for as long as the outage lasts "
            "(faxbox.shared.startup)."
        ),
    )
    publish_timeout_s: float = Field(default=30.0, gt=0)


class MongoSettings(_FaxboxSettings):
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_db: str = "faxbox"


class RunnerSettings(_FaxboxSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    log_level: str = "INFO"
    shutdown_grace_s: float = 30.0
    shutdown_margin_s: float = Field(
        default=15.0,
        gt=0,
        description=(
            "After SIGTERM, the process exits at the latest this long after its grace "
            "period, however busy or stuck it is (runner.ExitDeadline)."
        ),
    )
    loop_lag_bound_ms: float = Field(
        default=200.0,
        gt=0,
        description=(
            "Event-loop lag beyond which the process is overloaded: the transmitter "
            "starts no new call, the inbound receiver answers new calls 503 (looplag)."
        ),
    )
    overload_retry_after_s: int = Field(
        default=10,
        ge=1,
        description=(
            "While overloaded: when a fax job comes back to the transmitter, and the "
            "Retry-After of the inbound receiver's 503."
        ),
    )
    gc_young_threshold: int = Field(
        default=50_000,
        ge=0,
        description=(
            "Allocations between collections of Python's youngest generation, set once "
            "the service is up, after freezing what start-up made (0: leave the "
            "collector as Python sets it). See runner.tune_gc."
        ),
    )
    test_crash_at: str | None = Field(
        default=None,
        description=(
            "TEST HOOK ONLY: <service>.<point> at which that service exits abruptly "
            "(faxbox.shared.crashpoints lists the points); unset: never."
        ),
    )

    @field_validator("test_crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        return crashpoints.parse(value)


class OutboxSettings(_FaxboxSettings):
    outbox_sweep_interval_s: float = Field(
        default=30.0, gt=0, description="How often a replica looks for messages still owed."
    )
    outbox_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="Age at which a message still owed is published by a sweep, by any replica.",
    )


class ServiceSettings(BrokerSettings, MongoSettings, RunnerSettings, OutboxSettings):
    """The parts most workers need: broker, database, the runner and the outbox sweep."""


class OwnershipSettings(_FaxboxSettings):
    """What a faxbox may present as its own: read by everything that sets or uses it."""

    caller_id_scope: Literal["faxbox", "account"] = Field(
        default="faxbox",
        description=(
            "faxbox: a caller id must be one of the faxbox's numbers; account: any number "
            "in its account's inventory."
        ),
    )


class WebhookTargetSettings(_FaxboxSettings):
    webhooks_allowed_networks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Networks webhook URLs may point into although they are not public "
            '(loopback, private, link-local), e.g. ["10.20.0.0/16"]; empty: public only.'
        ),
    )
