"""Prometheus metrics of the transmitter (served by the runner's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS_IN_PROGRESS = Gauge("faxbox_transmitter_calls_in_progress", "Fax calls on the line now")
CALLS = Counter(
    "faxbox_transmitter_calls_total", "Fax calls placed, by media and result", ["media", "result"]
)
PAGES_SENT = Counter("faxbox_transmitter_pages_sent_total", "Pages the far end accepted")
OUTCOMES = Counter(
    "faxbox_transmitter_outcomes_total",
    "Attempts and jobs by outcome (sent, retry, failed) and failure class",
    ["outcome", "failure_class"],
)
REPUBLISHED = Counter(
    "faxbox_transmitter_republished_total", "Stored final events republished on redelivery"
)
CARRIER_BUSY = Counter(
    "faxbox_transmitter_all_carriers_busy_total", "Jobs put back because every channel was taken"
)
FAILOVERS = Counter(
    "faxbox_transmitter_carrier_failovers_total",
    "Calls handed to the next carrier within an attempt after a carrier failed",
)
OVERLOAD_DEFERRED = Counter(
    "faxbox_transmitter_overload_deferred_total",
    "Jobs put back unclaimed (no attempt counted): the event loop ran late, or the "
    "process had its bound of calls (FAXBOX_TRANSMITTER_ADMIT_CALLS)",
)
HANDED_BACK = Counter(
    "faxbox_transmitter_handed_back_total",
    "Jobs handed back to the broker with their confirmed pages as a note: the job ledger "
    "did not answer at the end of the call",
)
