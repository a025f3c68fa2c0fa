"""How late the event loop wakes: the measure behind admission control.

A service whose loop is saturated (too many calls' media, a burst of rendering) wakes
its timers late; every call it already carries then loses media time. Starting one
more call there turns a slow machine into failed faxes. :class:`LoopLag` sleeps
``interval_s`` again and again and records how much later than asked each wake-up
came; :meth:`LoopLag.overloaded` says whether that lag went past the bound within the
last ``hold_s`` (so one calm sample between two stalls does not let a burst of calls
in), or whether the loop is late right now (a handler that runs just after a stall
sees it before the monitor's own task has had its turn). The bound may be given with
each question (a line clock N times real time divides it by N).

The runner starts one per process (``runner.run_async``) and exports it in /metrics:
``faxbox_event_loop_lag_ms`` (the last wake-up's lateness) and
``faxbox_event_loop_lag_max_ms`` (the largest since the process started).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from prometheus_client import Gauge

LAG_MS = Gauge("faxbox_event_loop_lag_ms", "How late the event loop's last timer woke (ms)")
MAX_LAG_MS = Gauge(
    "faxbox_event_loop_lag_max_ms", "The latest the event loop woke since the process started (ms)"
)


class LoadGauge(Protocol):
    """What admission control asks (``LoopLag`` answers it)."""

    def overloaded(self, bound_ms: float | None = None) -> float | None:
        """The lag (ms) past ``bound_ms`` (default: the configured bound) that keeps new
        work out, or None."""
        ...


class LoopLag:
    """Lateness of the running loop's timers, measured by a periodic task."""

    def __init__(
        self,
        *,
        bound_ms: float,
        interval_s: float = 0.1,
        hold_s: float = 2.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.bound_ms = bound_ms
        self.interval_s = interval_s
        self.hold_s = hold_s
        self._clock = clock
        self.lag_ms = 0.0
        self.max_lag_ms = 0.0
        self._due: float | None = None  # when the monitor's current sleep should end
        self._recent: deque[tuple[float, float]] = deque()  # (at, lag_ms) within hold_s
        self._measured = asyncio.Event()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def record(self, lag_ms: float, at: float) -> None:
        """One wake-up ``lag_ms`` late, observed at ``at`` (loop time)."""
        self.lag_ms = lag_ms
        LAG_MS.set(lag_ms)
        if lag_ms > self.max_lag_ms:
            self.max_lag_ms = lag_ms
            MAX_LAG_MS.set(lag_ms)
        self._recent.append((at, lag_ms))
        self._measured.set()
        while self._recent and at - self._recent[0][0] > self.hold_s:
            self._recent.popleft()

    def late_now_ms(self) -> float:
        """How late the monitor's pending wake-up already is (0 if it is not due yet)."""
        if self._due is None:
            return 0.0
        return max(0.0, (self._now() - self._due) * 1000)

    def overloaded(self, bound_ms: float | None = None) -> float | None:
        """The lag (ms) that keeps new work out, or None while the loop keeps time.

        ``bound_ms`` overrides the configured bound: a process whose line clock runs N
        times real time (tests, benchmarks) holds its loop to 1/N of it."""
        bound = self.bound_ms if bound_ms is None else bound_ms
        late = self.late_now_ms()
        if late > bound:
            return late
        now = self._now()
        worst = max((lag for at, lag in self._recent if now - at <= self.hold_s), default=0.0)
        return worst if worst > bound else None

    async def run(self) -> None:
        while True:
            self._due = self._now() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = self._now()
            self.record(max(0.0, (now - self._due) * 1000), now)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLag]:
        task = asyncio.create_task(self.run(), name="loop-lag")
        try:
            # A process admits work only once it has measured its loop: with no sample
            # yet, a request arriving at start-up would pass whatever the load.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._measured.wait(), max(1.0, 10 * self.interval_s))
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._due = None
