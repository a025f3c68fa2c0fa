"""The line clock: call time against real time.

``pace`` is how much faster than real time a line runs: 1 in production, N on a test or
benchmark line (both ends must agree), 0 for unpaced lock-step audio (in-process tests:
as fast as the CPU allows, no clock at all). The fax line's limits (the call limit, the
silence watchdog) and its durations are call time; these turn it into the real time
the event loop waits, and back. Unpaced, the two are taken as equal.
"""

from __future__ import annotations


def real_seconds(call_seconds: float, pace: float) -> float:
    """Real time that ``call_seconds`` of call time take on a line at ``pace``."""
    return call_seconds / pace if pace > 0 else call_seconds


def call_seconds(real_seconds: float, pace: float) -> float:
    """Call time that passed in ``real_seconds`` on a line at ``pace``."""
    return real_seconds * pace if pace > 0 else real_seconds


def has_clock(pace: float) -> bool:
    """Whether the line has a media clock (T.38 needs one: it has no lock-step rhythm)."""
    return pace > 0
