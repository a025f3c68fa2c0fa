"""The media clock: paced slots, and a bounded catch-up after the event loop stalled."""

from __future__ import annotations

import pytest

from faxbox.fax.sip.rtp import MAX_CATCH_UP_S, MEDIA_LAG_DROPPED_MS, PACKET_SECONDS, Clock


class ManualTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def slots_sent_at_once(clock: Clock, time: ManualTime, limit: int = 10_000) -> int:
    """Slots the clock grants back to back before it would wait (time standing still)."""
    before = clock.slots
    while clock.slots - before < limit:
        due = clock._start + clock.slots * clock.interval  # type: ignore[operator]
        if due > time.now:
            break
        await clock.wait_slot()
    return clock.slots - before


async def test_a_clock_on_time_grants_one_slot_per_interval() -> None:
    time = ManualTime()
    clock = Clock(pace=1.0, now=time)
    await clock.wait_slot()
    assert await slots_sent_at_once(clock, time) == 0
    time.now += PACKET_SECONDS * 3
    assert await slots_sent_at_once(clock, time) == 3
    assert clock.dropped_media_s == 0


@pytest.mark.parametrize("pace", [1.0, 10.0])
async def test_a_long_stall_is_made_up_only_for_the_bounded_slice_and_the_rest_counted(
    pace: float,
) -> None:
    time = ManualTime()
    clock = Clock(pace=pace, now=time)
    await clock.wait_slot()
    counted_before = MEDIA_LAG_DROPPED_MS._value.get()
    stall_s = 3.0
    time.now += stall_s
    burst = await slots_sent_at_once(clock, time)
    # Back to back only for MAX_CATCH_UP_S of real time (plus the slot that was due).
    assert burst == pytest.approx(MAX_CATCH_UP_S / clock.interval + 1, abs=1)
    dropped_media_s = (stall_s - MAX_CATCH_UP_S - clock.interval) * pace
    assert clock.dropped_media_s == pytest.approx(dropped_media_s, abs=clock.interval * pace)
    counted = MEDIA_LAG_DROPPED_MS._value.get() - counted_before
    assert counted == pytest.approx(clock.dropped_media_s * 1000)
    # After the catch-up it keeps the pace again.
    time.now += clock.interval * 2
    assert await slots_sent_at_once(clock, time) == 2
