"""The collector's pauses are timed, counted by generation, and the long ones logged."""

from __future__ import annotations

import gc
import logging

import pytest

from faxbox.shared import gcpause


def _count(generation: str) -> float:
    for metric in gcpause.PAUSES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels == {"generation": generation}:
                return sample.value
    return 0.0


def test_a_full_collection_is_counted_and_a_long_one_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = gcpause.PauseWatch(warn_ms=-1)  # every pause is "long"
    gc.callbacks.append(watch)
    try:
        before = _count("2")
        with caplog.at_level(logging.WARNING, logger=gcpause.__name__):
            gc.collect()
    finally:
        gc.callbacks.remove(watch)
    assert _count("2") == before + 1
    assert "garbage collection (generation 2) stopped the process for" in caplog.text


def test_a_short_pause_is_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    watch = gcpause.PauseWatch(warn_ms=60_000)
    gc.callbacks.append(watch)
    try:
        with caplog.at_level(logging.WARNING, logger=gcpause.__name__):
            gc.collect()
    finally:
        gc.callbacks.remove(watch)
    assert "garbage collection" not in caplog.text


def _watches() -> int:
    return sum(isinstance(c, gcpause.PauseWatch) for c in gc.callbacks)


def test_watching_twice_installs_one_callback_and_the_first_block_removes_it() -> None:
    assert _watches() == 0
    with gcpause.watching() as first:
        with gcpause.watching() as second:
            assert second is first
            assert _watches() == 1
        assert _watches() == 1
    assert _watches() == 0
