"""The day key statements the history writers send (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest

from faxbox.history.day_keys import KeyEntry, key_updates

T = datetime(2026, 11, 10, 23, 59, 59, 999_500, tzinfo=UTC)


def test_one_upsert_per_day_with_the_earliest_time_per_fax() -> None:
    updates = key_updates(
        [
            KeyEntry("fax_a", T, user_id="usr_1", direction="outbound"),
            KeyEntry("fax_a", T - timedelta(hours=1)),
            KeyEntry("fax_b", T + timedelta(seconds=1), direction="inbound"),
        ]
    )
    assert updates == [
        {
            "q": {"_id": "20261110"},
            "u": {"$min": {"t.fax_a": datetime(2026, 11, 10, 22, 59, 59, 999_000, tzinfo=UTC)}},
            "upsert": True,
        },
        {
            "q": {"_id": "20261110-owners"},
            "u": {"$set": {"u.fax_a": "usr_1", "d.fax_a": "outbound"}},
            "upsert": True,
        },
        {
            "q": {"_id": "20261111"},
            "u": {"$min": {"t.fax_b": datetime(2026, 11, 11, 0, 0, 0, 999_000, tzinfo=UTC)}},
            "upsert": True,
        },
        {
            "q": {"_id": "20261111-owners"},
            "u": {"$set": {"d.fax_b": "inbound"}},
            "upsert": True,
        },
    ]


def test_the_day_is_the_utc_day_of_the_millisecond_stored() -> None:
    # 23:59:59.9995 is stored as .999 (BSON keeps milliseconds): still the 10th.
    # Nothing known but the time: no owners document.
    (update,) = key_updates([KeyEntry("f", T.astimezone(timezone(timedelta(hours=5))))])
    assert update["q"] == {"_id": "20261110"}


@pytest.mark.parametrize("fax_id", ["fax.1", "$fax", "a%2Eb", "f%.$x"])
def test_fax_ids_become_field_names_without_dots_or_dollars(fax_id: str) -> None:
    times, owners = key_updates([KeyEntry(fax_id, T, user_id="u")])
    (field,) = times["u"]["$min"]
    key = field.removeprefix("t.")
    assert "." not in key
    assert "$" not in key
    assert unquote(key) == fax_id
    assert owners["u"]["$set"] == {f"u.{key}": "u"}


def test_an_empty_fax_id_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        key_updates([KeyEntry("", T)])
