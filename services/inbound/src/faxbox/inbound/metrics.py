"""Prometheus metrics of the inbound receiver (served by the runner's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS_IN_PROGRESS = Gauge("faxbox_inbound_calls_in_progress", "Inbound fax calls on the line now")
CALLS_REFUSED = Counter(
    "faxbox_inbound_calls_refused_total", "INVITEs refused, by SIP status", ["status"]
)
PAGES_RECEIVED = Counter("faxbox_inbound_pages_received_total", "Pages received and stored")
OUTCOMES = Counter(
    "faxbox_inbound_outcomes_total",
    "Answered calls by outcome (received, failed) and failure class",
    ["outcome", "failure_class"],
)
