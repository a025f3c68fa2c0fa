"""Settings shared by every service, read from the environment with the ``FAXBOX_`` prefix.

Each service composes its own ``Settings`` class from these parts, so one variable
(``FAXBOX_AMQP_URL``, ``FAXBOX_MONGO_URL`` …) means the same thing everywhere.

A service's own settings are fields named after its package (``transmitter_max_calls``:
``FAXBOX_TRANSMITTER_MAX_CALLS``), so one environment can serve a whole stack without one
service's value reaching another. Its class names that prefix in ``service_prefix``, which
also lets ``FAXBOX_<SERVICE>_<SHARED>`` set a shared setting for that service alone
(``FAXBOX_TRANSMITTER_PREFETCH`` before ``FAXBOX_PREFETCH``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from faxbox.shared import crashpoints

ENV_PREFIX = "FAXBOX_"

log = logging.getLogger(__name__)


class FaxboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # "<package>_" in a service's class: the start of its own fields' names.
    service_prefix: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.service_prefix:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        this_service = EnvSettingsSource(
            settings_cls, env_prefix=ENV_PREFIX + cls.service_prefix.upper()
        )
        return init_settings, this_service, env_settings, dotenv_settings, file_secret_settings


def unread_env_names(
    settings_cls: type[FaxboxSettings], environ: Mapping[str, str]
) -> dict[str, str]:
    """The ``FAXBOX_*`` names in ``environ`` that this service does not read but would
    under its prefix (names from before the prefix), each with the name it reads."""
    prefix = settings_cls.service_prefix
    unread: dict[str, str] = {}
    for name in environ:
        rest = name.upper().removeprefix(ENV_PREFIX)
        if not prefix or rest == name.upper():
            continue
        field = rest.lower().split("__")[0]  # FAXBOX_X__Y sets part of the field x
        if field not in settings_cls.model_fields and prefix + field in settings_cls.model_fields:
            unread[name] = ENV_PREFIX + prefix.upper() + rest
    return unread


def warn_unread_env(settings_cls: type[FaxboxSettings], environ: Mapping[str, str]) -> None:
    for old, new in sorted(unread_env_names(settings_cls, environ).items()):
        log.warning("%s is not read: a service's own settings are under its prefix, %s", old, new)


class BrokerSettings(FaxboxSettings):
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


class MongoSettings(FaxboxSettings):
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_db: str = "faxbox"


class RunnerSettings(FaxboxSettings):
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

    def loop_lag_bound_at(self, line_pace: float) -> float:
        """The lag bound (ms) of a process whose line clock runs ``line_pace`` times real
        time: its calls' timers are that much tighter, so its loop must keep closer time."""
        return self.loop_lag_bound_ms / max(1.0, line_pace)


class OutboxSettings(FaxboxSettings):
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


class OwnershipSettings(FaxboxSettings):
    """What a faxbox may present as its own: read by everything that sets or uses it."""

    caller_id_scope: Literal["faxbox", "account"] = Field(
        default="faxbox",
        description=(
            "faxbox: a caller id must be one of the faxbox's numbers; account: any number "
            "in its account's inventory."
        ),
    )


class WebhookTargetSettings(FaxboxSettings):
    webhooks_allowed_networks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Networks webhook URLs may point into although they are not public "
            '(loopback, private, link-local), e.g. ["10.20.0.0/16"]; empty: public only.'
        ),
    )
