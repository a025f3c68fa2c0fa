"""Prometheus metrics of the mail-poller (served by the runner's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_TAKEN = Counter(
    "faxbox_mail_poller_messages_taken_total",
    "Messages taken out of an intake folder, by outcome",
    ["mailbox", "outcome"],
)
INTAKE_LATENCY = Histogram(
    "faxbox_mail_poller_intake_latency_seconds",
    "From the mail's arrival in the mailbox (IMAP INTERNALDATE, 1 s resolution) "
    "to the broker's confirm of MailReceived",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
MESSAGES_FAILED = Counter(
    "faxbox_mail_poller_message_failures_total",
    "Attempts to take a message that failed and will be retried",
    ["mailbox"],
)
FETCH_FAILURES = Counter(
    "faxbox_mail_poller_fetch_failures_total",
    "Reads of one message the server did not complete (retried with backoff, then set aside)",
    ["mailbox"],
)
LEASE_HELD = Gauge(
    "faxbox_mail_poller_lease_held", "1 while this replica is the active poller", ["mailbox"]
)
IMAP_CONNECTED = Gauge(
    "faxbox_mail_poller_imap_connected", "1 while the IMAP session is open", ["mailbox"]
)
RECONNECTS = Counter(
    "faxbox_mail_poller_reconnects_total", "IMAP sessions that ended in an error", ["mailbox"]
)
PUSHES = Counter(
    "faxbox_mail_poller_pushes_total",
    "Wake-ups POSTed by the IMAP server (Dovecot push) for a watched folder",
    ["mailbox"],
)
