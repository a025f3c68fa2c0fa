"""When the network tries an originated call again, as a carrier and a fax machine do.

A call to our inbound receiver that ends before any page got through is tried again:

- refused with a status that says "not now" rather than "no": 408, 480, 500, 502, 503,
  504 (a 503 with Retry-After is the receiver's overload or database outage), or no
  answer at all (nobody answered in time, no response, no connection);
- answered, but ended without a single page confirmed (a fax machine redials then).

Refusals that will not change (404, 403, 486 busy, 488 ...) and calls that carried a
page are not tried again: a partial fax is what the receiver keeps and reports.

The next try waits the 503's Retry-After when it has one, else a backoff doubling from
``backoff_s`` to ``backoff_max_s``; there are at most ``tries`` tries, all started
within ``window_s`` of the first. Delays are real time: a carrier does not run at the
line's pace.
"""

from __future__ import annotations

from dataclasses import dataclass

from faxbox.fax.sip.ua import CallFailed

RETRY_STATUSES = frozenset({408, 480, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RedialPolicy:
    tries: int = 30
    window_s: float = 1200.0
    backoff_s: float = 5.0
    backoff_max_s: float = 60.0

    def delay_s(self, tries_done: int, retry_after_s: int | None) -> float:
        """The wait before try ``tries_done + 1``."""
        if retry_after_s is not None:
            return float(min(max(retry_after_s, 0), self.backoff_max_s))
        return min(self.backoff_s * 2.0 ** max(tries_done - 1, 0), self.backoff_max_s)

    def next_delay(
        self, tries_done: int, elapsed_s: float, retry_after_s: int | None
    ) -> float | None:
        """The wait before the next try, or None when this was the last one."""
        if tries_done >= self.tries:
            return None
        delay = self.delay_s(tries_done, retry_after_s)
        return delay if elapsed_s + delay <= self.window_s else None


def worth_another_try(failure: CallFailed | None, answered: bool, pages: int) -> bool:
    """Whether a try that ended so is tried again (see the module's rules)."""
    if answered:
        return pages == 0
    if failure is None:  # no SIP answer at all: no connection, no response
        return True
    return failure.status in RETRY_STATUSES or failure.local or failure.gave_up
