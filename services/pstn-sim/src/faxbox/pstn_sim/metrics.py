"""Prometheus metrics of the simulator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS = Counter(
    "faxbox_pstn_sim_calls_total",
    "Calls that ended, by direction, scenario behaviour and result",
    ["direction", "behaviour", "result"],
)
CALLS_IN_PROGRESS = Gauge(
    "faxbox_pstn_sim_calls_in_progress", "Calls being set up or connected", ["direction"]
)
LOOP_LAG = Gauge(
    "faxbox_pstn_sim_loop_lag_max_seconds",
    "Longest event-loop stall in the last 10 s: media slots are 20 ms / pace, so a stall "
    "longer than the jitter buffer is heard as a gap by the other end",
)
