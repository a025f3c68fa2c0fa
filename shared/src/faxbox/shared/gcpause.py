"""How long the garbage collector stops the process, by generation.

A collection runs on the thread that allocated, in the middle of whatever it was doing:
for an event loop carrying fax calls it is a stall like any other, and a full
collection of a large heap takes long enough to fail calls on T.30's timers (the more
so on a line clock faster than real time). ``faxbox_gc_pause_seconds`` counts every
pause by generation; a pause longer than ``warn_ms`` is logged with its generation and
what it collected, so a stall in the loop-lag figures can be told apart from work.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

PAUSES = Histogram(
    "faxbox_gc_pause_seconds",
    "Garbage collector pauses, by generation",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


class PauseWatch:
    """A ``gc.callbacks`` entry timing each collection."""

    def __init__(self, warn_ms: float) -> None:
        self.warn_ms = warn_ms
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        pause_s = time.perf_counter() - self._started
        self._started = None
        generation = int(info.get("generation", -1))
        PAUSES.labels(str(generation)).observe(pause_s)
        if pause_s * 1000 > self.warn_ms:
            log.warning(
                "garbage collection (generation %d) stopped the process for %.0f ms "
                "(%d objects collected)",
                generation,
                pause_s * 1000,
                int(info.get("collected", 0)),
            )


@contextlib.contextmanager
def watching(warn_ms: float = 50.0) -> Iterator[PauseWatch]:
    """Time every collection while the block runs (one watch per process: a block
    entered while another watches shares it, and only the first one removes it)."""
    for callback in gc.callbacks:
        if isinstance(callback, PauseWatch):
            yield callback
            return
    pause_watch = PauseWatch(warn_ms)
    gc.callbacks.append(pause_watch)
    try:
        yield pause_watch
    finally:
        # A service run inside a test process must not time that process's collections.
        gc.callbacks.remove(pause_watch)
