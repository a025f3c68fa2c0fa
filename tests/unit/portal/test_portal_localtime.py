"""Time zones of the portal's pages and the sign-in limit's message, without servers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from faxbox.portal.localtime import UTC_ZONE, Clock, shared_zone, zone
from faxbox.portal.throttle import TooManyFailures

NEW_YORK = zone("America/New_York")


def test_times_carry_the_zone_abbreviation_of_their_season() -> None:
    winter = datetime(2026, 1, 15, 20, 30, 15, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 20, 30, 15, tzinfo=UTC)
    assert NEW_YORK.format(winter) == "2026-01-15 15:30 EST"
    assert NEW_YORK.format(summer, seconds=True) == "2026-07-15 16:30:15 EDT"
    assert zone("Asia/Tokyo").format(winter) == "2026-01-16 05:30 JST"
    assert UTC_ZONE.format(winter) == "2026-01-15 20:30 UTC"
    assert NEW_YORK.format(None) == ""


def test_a_naive_time_is_utc() -> None:
    assert NEW_YORK.format(datetime(2026, 1, 15, 20, 30)) == "2026-01-15 15:30 EST"


def test_days_start_at_local_midnight_across_daylight_saving() -> None:
    # 2026-03-08: New York moves from EST (-5) to EDT (-4) at 02:00.
    assert NEW_YORK.day_start(date(2026, 3, 8)) == datetime(2026, 3, 8, 5, tzinfo=UTC)
    assert NEW_YORK.day_start(date(2026, 3, 9)) == datetime(2026, 3, 9, 4, tzinfo=UTC)
    assert UTC_ZONE.day_start(date(2026, 3, 9)) == datetime(2026, 3, 9, tzinfo=UTC)
    late = datetime(2026, 3, 9, 3, 59, tzinfo=UTC)
    assert NEW_YORK.today(late) == date(2026, 3, 8)


@pytest.mark.parametrize("name", [None, "", "UTC", "Mars/Olympus_Mons", "../etc/passwd"])
def test_unknown_or_missing_zones_are_utc(name: str | None) -> None:
    assert zone(name) == UTC_ZONE


def test_the_shared_zone_of_an_accounts_faxboxes() -> None:
    assert shared_zone(["Asia/Tokyo", "Asia/Tokyo"]).name == "Asia/Tokyo"
    assert shared_zone(["Asia/Tokyo", "America/New_York"]) == UTC_ZONE
    assert shared_zone(["Asia/Tokyo", None]) == UTC_ZONE
    assert shared_zone([]) == UTC_ZONE


def test_the_faxbox_time_is_shown_only_when_it_reads_differently() -> None:
    clock = Clock(UTC_ZONE, {"fbx_tokyo": zone("Asia/Tokyo"), "fbx_utc": UTC_ZONE})
    moment = datetime(2026, 1, 15, 20, 30, 15, tzinfo=UTC)
    assert clock.for_faxbox("fbx_tokyo", moment) == "2026-01-16 05:30 JST"
    assert clock.for_faxbox("fbx_tokyo", moment, seconds=True) == "2026-01-16 05:30:15 JST"
    assert clock.for_faxbox("fbx_utc", moment) == ""
    assert clock.for_faxbox("fbx_unknown", moment) == ""
    assert clock.for_faxbox(None, moment) == ""


@pytest.mark.parametrize(
    ("seconds", "words"), [(1, "1 minute."), (60, "1 minute."), (61, "2 minutes."), (900, "15 ")]
)
def test_the_sign_in_limit_says_when_to_retry(seconds: int, words: str) -> None:
    message = TooManyFailures(seconds).message
    assert message.startswith("Too many failed sign-ins")
    assert words in message
