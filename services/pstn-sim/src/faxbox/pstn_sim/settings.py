"""Settings of the simulator, from ``FAXBOX_PSTN_*`` variables.

The process-level parts (log level, the health/metrics port) are the shared
``RunnerSettings`` (``FAXBOX_HTTP_PORT`` ...), read separately by ``__main__``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PstnSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAXBOX_PSTN_", extra="ignore", frozen=True)

    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=5070, ge=0, le=65535, description="0 picks a free port.")
    http_port: int = Field(
        default=8070, ge=0, le=65535, description="Control API on 127.0.0.1; 0 picks a free port."
    )
    pace: float = Field(
        default=1.0,
        ge=0,
        description="Line clock: 1.0 real time, N times faster; both ends must agree. "
        "T.38 needs pace > 0.",
    )
    scenarios: Path | None = Field(
        default=None, description="JSON file with the scenario table; None: the built-in one."
    )
    data_dir: Path = Field(default=Path("var/pstn-sim"), description="Received pages (TIFF).")
    inbound_uri: str = Field(
        default="sip:127.0.0.1:5080", description="Our inbound receiver, for forward/originate."
    )
    # When set, callers must answer a digest challenge (401) with these, as on a trunk.
    auth_username: str | None = None
    auth_password: str | None = None
    auth_realm: str = "pstn-sim"
    # Credentials the simulator gives when the inbound receiver challenges it.
    outbound_username: str | None = None
    outbound_password: str | None = None
    # An originated call that ends before any page got through is tried again, as a
    # carrier does (``redial``): at most this many tries, all within this window (real
    # seconds), a 503's Retry-After or a backoff doubling from backoff_s to backoff_max_s
    # apart. The window outlasts a 10-minute database outage of the receiver.
    originate_tries: int = Field(default=30, ge=1)
    originate_window_s: float = Field(default=1200.0, ge=0)
    originate_backoff_s: float = Field(default=5.0, gt=0)
    originate_backoff_max_s: float = Field(default=60.0, gt=0)
    # Seconds (real time) an originated or forwarded call may ring unanswered.
    answer_timeout_s: float = Field(default=60.0, gt=0)
    # Longest fax call (line time) before the simulator hangs up.
    max_call_s: float = Field(default=1800.0, gt=0)
    # Line time without a single media packet from the far end after which the call is
    # dead (the far end crashed without a BYE). A spandsp T.38 terminal waiting for
    # image data never times out by itself; T.30 never stays silent longer than T1
    # (35 s), so 60 s cannot cut a live call.
    media_timeout_s: float = Field(default=60.0, gt=0)
    # RTP packets buffered before playing; None: the SIP layer's default for the pace
    # (60 ms of line time, at least 20 ms real time). More absorbs longer stalls of the
    # far end's event loop at the cost of delay.
    jitter_prefill: int | None = Field(default=None, ge=1, le=50)
    # Identity (CSI/TSI) of the simulated fax machines.
    station_id: str = Field(default="PSTN-SIM", max_length=20)
