"""Admission control: no new call while this process's event loop runs late.

Every call on the line needs the loop on time (its media clock catches up at most a
bounded slice, see ``faxbox.fax``); a loop already late is a machine at its limit, and
one more call there would cost calls already on the line their pages. So before a job
is claimed, :func:`admit` asks the process's loop-lag monitor (``faxbox.shared.looplag``,
run by the runner); while it reports overload the request goes back to the broker with
``RetryLater``: the job is not claimed, no attempt is counted, nothing is dead-lettered
(the settling policy's scheduled retries use up no budget), and it comes back after
``overload_retry_s``, to this replica or another one.

The bound is in call time: with the line clock at N times real time (``transmitter_line_pace``),
a loop 20 ms late costs a call what 200 ms cost at real time, so the service divides
the configured bound by the pace.

Loop lag is a late signal: a burst of requests is admitted in the instant before the
calls it starts make the loop late, and G.711 calls fail (far end hanging up in phase B,
calls cut off) at lags well below the bound. So a process may also have a bound on the
calls it runs at once (``admit_calls``, the capacity ``benchmarks/concurrent_calls.py``
measured): a request beyond it goes back the same way, unclaimed. Unlike ``transmitter_max_calls``
(a request waits in the process, holding its delivery), it is free for another replica.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from faxbox.shared.looplag import LoadGauge
from faxbox.shared.policy import RetryLater
from faxbox.transmitter import metrics

log = logging.getLogger(__name__)


class CallsAdmitted:
    """Requests admitted and not yet done in this process (claim, call, conclusion)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


def admit(
    gauge: LoadGauge | None,
    retry_s: int,
    bound_ms: float | None = None,
    *,
    admitted: CallsAdmitted | None = None,
    max_admitted: int | None = None,
) -> None:
    """Return if a new call may start; raise ``RetryLater`` while the loop is late or
    ``max_admitted`` calls are on (``holding`` must follow with no await in between)."""
    if admitted is not None and max_admitted is not None and admitted.count >= max_admitted:
        metrics.OVERLOAD_DEFERRED.inc()
        log.warning("%d calls admitted: the fax waits %ds for a call", admitted.count, retry_s)
        raise RetryLater(f"overloaded ({admitted.count} calls admitted); no new call", retry_s)
    lag_ms = gauge.overloaded(bound_ms) if gauge is not None else None
    if lag_ms is None:
        return
    metrics.OVERLOAD_DEFERRED.inc()
    log.warning("event loop %.0f ms late: the fax waits %ds for a call", lag_ms, retry_s)
    raise RetryLater(f"overloaded (event loop {lag_ms:.0f} ms late); no new call", retry_s)
