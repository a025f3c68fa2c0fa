from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from faxbox.shared.looplag import LoopLag
from faxbox.shared.runner import DEADLINE_EXIT_CODE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wake_up_past_the_bound_keeps_new_work_out_for_the_hold_time() -> None:
    clock = Clock()
    lag = LoopLag(bound_ms=200, hold_s=2.0, clock=clock)
    lag.record(50, clock.now)
    assert lag.overloaded() is None
    assert lag.overloaded(bound_ms=20) == 50  # a line clock 10 times real time
    lag.record(350, clock.now)
    assert lag.overloaded() == 350
    clock.now += 1.0
    lag.record(10, clock.now)  # one calm sample between two stalls lets nothing in
    assert lag.overloaded() == 350
    clock.now += 1.5
    assert lag.overloaded() is None
    assert lag.max_lag_ms == 350


async def test_a_blocked_loop_is_seen_at_once_and_measured() -> None:
    lag = LoopLag(bound_ms=250, interval_s=0.02, hold_s=0.5)
    async with lag.running():
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - what a saturated loop does to its timers
        # The monitor's task has not run yet, but its wake-up is overdue.
        assert (lag.overloaded() or 0) > 300
        await asyncio.sleep(0.05)
        assert lag.max_lag_ms > 300
        assert (lag.overloaded() or 0) > 300
        await asyncio.sleep(1.0)
        assert lag.overloaded() is None


def test_sigterm_ends_a_process_whose_loop_never_comes_back() -> None:
    # A service stuck in Python code (as the transmitter once was, catching up media
    # time for minutes): its grace and margin pass, then the exit deadline ends it.
    script = textwrap.dedent(
        """
        import contextlib, sys, time
        from faxbox.shared.runner import run
        from faxbox.shared.settings import RunnerSettings

        @contextlib.asynccontextmanager
        async def service(runtime):
            print("up", flush=True)
            while True:
                sum(range(10_000))  # never yields to the loop
            yield

        run("wedged", RunnerSettings(shutdown_grace_s=1, shutdown_margin_s=1), service)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"up"
        started = time.monotonic()
        proc.terminate()
        assert proc.wait(10) == DEADLINE_EXIT_CODE
        assert 1.5 < time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
