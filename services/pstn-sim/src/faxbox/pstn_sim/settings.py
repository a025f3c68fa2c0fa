"""Settings of the simulator, from ``FAXBOX_PSTN_SIM_*`` variables.

The process-level parts (log level, the health/metrics port) are the shared
``RunnerSettings`` (``FAXBOX_HTTP_PORT`` ...), read separately by ``__main__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from faxbox.shared.settings import FaxboxSettings


class PstnSettings(FaxboxSettings):
    service_prefix: ClassVar[str] = "pstn_sim_"

    pstn_sim_sip_host: str = "127.0.0.1"
    pstn_sim_sip_port: int = Field(default=5070, ge=0, le=65535, description="0 picks a free port.")
    pstn_sim_http_port: int = Field(
        default=8070, ge=0, le=65535, description="Control API on 127.0.0.1; 0 picks a free port."
    )
    pstn_sim_pace: float = Field(
        default=1.0,
        ge=0,
        description="Line clock: 1.0 real time, N times faster; both ends must agree. "
        "T.38 needs pace > 0.",
    )
    pstn_sim_scenarios: Path | None = Field(
        default=None, description="JSON file with the scenario table; None: the built-in one."
    )
    pstn_sim_data_dir: Path = Field(
        default=Path("var/pstn-sim"), description="Received pages (TIFF)."
    )
    pstn_sim_inbound_uri: str = Field(
        default="sip:127.0.0.1:5080",
        description="Our inbound receiver, for forward/originate: one SIP URI, or the "
        "routes to its replicas comma-separated (each call starts at the next route; a "
        "refusal or no answer goes on to the others at once).",
    )
    # When set, callers must answer a digest challenge (401) with these, as on a trunk.
    pstn_sim_auth_username: str | None = None
    pstn_sim_auth_password: str | None = None
    pstn_sim_auth_realm: str = "pstn-sim"
    # Credentials the simulator gives when the inbound receiver challenges it.
    pstn_sim_outbound_username: str | None = None
    pstn_sim_outbound_password: str | None = None
    # An originated call that ends before any page got through is tried again, as a
    # carrier does (``redial``): at most this many rounds (a round tries the routes in
    # turn until one takes the call), all within this window (real
    # seconds), a 503's Retry-After or a backoff doubling from backoff_s to backoff_max_s
    # apart. The window outlasts a 10-minute database outage of the receiver.
    pstn_sim_originate_tries: int = Field(default=30, ge=1)
    pstn_sim_originate_window_s: float = Field(default=1200.0, ge=0)
    pstn_sim_originate_backoff_s: float = Field(default=5.0, gt=0)
    pstn_sim_originate_backoff_max_s: float = Field(default=60.0, gt=0)
    # Seconds (real time) an originated or forwarded call may ring unanswered.
    pstn_sim_answer_timeout_s: float = Field(default=60.0, gt=0)
    # Longest fax call (line time) before the simulator hangs up.
    pstn_sim_max_call_s: float = Field(default=1800.0, gt=0)
    # Line time without a single media packet from the far end after which the call is
    # dead (the far end crashed without a BYE). A spandsp T.38 terminal waiting for
    # image data never times out by itself; T.30 never stays silent longer than T1
    # (35 s), so 60 s cannot cut a live call.
    pstn_sim_media_timeout_s: float = Field(default=60.0, gt=0)
    # RTP packets buffered before playing; None: the SIP layer's default for the pace
    # (60 ms of line time, at least 20 ms real time). More absorbs longer stalls of the
    # far end's event loop at the cost of delay.
    pstn_sim_jitter_prefill: int | None = Field(default=None, ge=1, le=50)
    # Identity (CSI/TSI) of the simulated fax machines.
    pstn_sim_station_id: str = Field(default="PSTN-SIM", max_length=20)
