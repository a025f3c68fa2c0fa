"""When the network tries an originated call again, as a carrier and a fax machine do.

A call to our inbound receiver that ends before any page got through is tried again:

- refused with a status that says "not now" rather than "no": 408, 480, 500, 502, 503,
  504 (a 503 with Retry-After is the receiver's overload or database outage), or no
  answer at all (nobody answered in time, no response, no connection);
- answered, but ended without a single page confirmed (a fax machine redials then).

Refusals that will not change (404, 403, 486 busy, 488 ...) and calls that carried a
page are not tried again: a partial fax is what the receiver keeps and reports.

The receiver may have several routes (replicas behind one number, ``Routes``): a carrier
starts each call at the next route, so calls spread over them, and a try that one route
refuses with a "not now" or does not answer goes on to the next route at once; an
answered try that carried no page ends the round (the fax machine redials after its
pause). Only a round that found no route able to take the call waits.

The next round waits the shortest Retry-After its 503s gave, else a backoff doubling
from ``backoff_s`` to ``backoff_max_s``; there are at most ``tries`` rounds, all started
within ``window_s`` of the first. Delays are real time: a carrier does not run at the
line's pace.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from faxbox.fax.sip.ua import CallFailed

RETRY_STATUSES = frozenset({408, 480, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RedialPolicy:
    tries: int = 30
    window_s: float = 1200.0
    backoff_s: float = 5.0
    backoff_max_s: float = 60.0

    def delay_s(self, rounds_done: int, retry_after_s: int | None) -> float:
        """The wait before round ``rounds_done + 1``."""
        if retry_after_s is not None:
            return float(min(max(retry_after_s, 0), self.backoff_max_s))
        return min(self.backoff_s * 2.0 ** max(rounds_done - 1, 0), self.backoff_max_s)

    def next_delay(
        self, rounds_done: int, elapsed_s: float, retry_after_s: int | None
    ) -> float | None:
        """The wait before the next round, or None when this was the last one."""
        if rounds_done >= self.tries:
            return None
        delay = self.delay_s(rounds_done, retry_after_s)
        return delay if elapsed_s + delay <= self.window_s else None


def worth_another_try(failure: CallFailed | None, answered: bool, pages: int) -> bool:
    """Whether a try that ended so is tried again (see the module's rules)."""
    if answered:
        return pages == 0
    if failure is None:  # no SIP answer at all: no connection, no response
        return True
    return failure.status in RETRY_STATUSES or failure.local or failure.gave_up


def parse_routes(value: str) -> tuple[str, ...]:
    """The SIP URIs of a comma-separated route list (at least one)."""
    routes = tuple(part.strip() for part in value.split(",") if part.strip())
    if not routes:
        raise ValueError("no SIP URI in the route list")
    return routes


class Routes:
    """The receiver's routes, in the order each new call tries them: a turn further on
    every call, so calls spread over replicas as a carrier's route list spreads them."""

    def __init__(self, uris: tuple[str, ...]) -> None:
        if not uris:
            raise ValueError("no route")
        self.uris = uris
        self._turn = itertools.count()

    def for_a_call(self) -> tuple[str, ...]:
        start = next(self._turn) % len(self.uris)
        return self.uris[start:] + self.uris[:start]
