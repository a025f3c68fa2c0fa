"""Prometheus metrics of the inbound receiver (served by the runner's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CALLS_IN_PROGRESS = Gauge("faxbox_inbound_calls_in_progress", "Inbound fax calls on the line now")
CALLS_REFUSED = Counter(
    "faxbox_inbound_calls_refused_total", "INVITEs refused, by SIP status", ["status"]
)
INVITES_REFUSED = Counter(
    "faxbox_inbound_invites_refused_total",
    "INVITEs refused before any number was looked up, by reason: rate (too many from one "
    "address), source (not a carrier's address), auth (a wrong digest answer), challenge "
    "(the 401 a carrier with inbound credentials gets first)",
    ["reason"],
)
PAGES_RECEIVED = Counter("faxbox_inbound_pages_received_total", "Pages received and stored")
OUTCOMES = Counter(
    "faxbox_inbound_outcomes_total",
    "Answered calls by outcome (received, failed) and failure class",
    ["outcome", "failure_class"],
)
SIP_REGISTERED = Gauge(
    "faxbox_inbound_sip_registered",
    "1 while our contact is registered with the carrier, else 0",
    ["carrier"],
)
SIP_REGISTRATION_FAILURES = Counter(
    "faxbox_inbound_sip_registration_failures_total",
    "REGISTERs the carrier refused or never answered",
    ["carrier"],
)
PENDING = Gauge(
    "faxbox_inbound_faxes_pending_storage",
    "Received faxes kept on disk because the database could not take them yet",
)
