"""Admission control: no new call while this process's event loop runs late.

Every call on the line needs the loop on time (its media clock catches up at most a
bounded slice, see ``faxbox.fax``); a loop already late is a machine at its limit, and
one more call there would cost calls already on the line their pages. So before a job
is claimed, :func:`admit` asks the process's loop-lag monitor (``faxbox.shared.looplag``,
run by the runner); while it reports overload the request goes back to the broker with
``RetryLater``: the job is not claimed, no attempt is counted, nothing is dead-lettered
(the settling policy's scheduled retries use up no budget), and it comes back after
``overload_retry_s``, to this replica or another one.

The bound is in call time: with the line clock at N times real time (``line_pace``),
a loop 20 ms late costs a call what 200 ms cost at real time, so the service divides
the configured bound by the pace.
"""

from __future__ import annotations

import logging

from faxbox.shared.looplag import LoadGauge
from faxbox.shared.policy import RetryLater
from faxbox.transmitter import metrics

log = logging.getLogger(__name__)


def admit(gauge: LoadGauge | None, retry_s: int, bound_ms: float | None = None) -> None:
    """Return if a new call may start; raise ``RetryLater`` while the loop is late."""
    lag_ms = gauge.overloaded(bound_ms) if gauge is not None else None
    if lag_ms is None:
        return
    metrics.OVERLOAD_DEFERRED.inc()
    log.warning("event loop %.0f ms late: the fax waits %ds for a call", lag_ms, retry_s)
    raise RetryLater(f"overloaded (event loop {lag_ms:.0f} ms late); no new call", retry_s)
