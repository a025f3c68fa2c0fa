"""Names of the per-account, per-month collections and buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from faxbox.shared.store.monthly import (
    MAX_ACCOUNT_ID_LENGTH,
    document_bucket_name,
    history_collection_name,
    month_key,
    month_start,
    months_between,
    next_month,
    parse_month,
    validate_account_id,
)


def test_month_key_is_utc_month() -> None:
    assert month_key(datetime(2025, 3, 14, 12, 0, tzinfo=UTC)) == "202503"


def test_last_second_of_month_utc_stays_in_month() -> None:
    last = datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert month_key(last) == "202501"
    assert month_key(last + timedelta(microseconds=1)) == "202502"


def test_year_boundary() -> None:
    assert month_key(datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)) == "202412"
    assert month_key(datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)) == "202501"


def test_other_offsets_are_converted_to_utc() -> None:
    # 00:30 on Feb 1st in UTC+1 is still January in UTC.
    plus_one = timezone(timedelta(hours=1))
    assert month_key(datetime(2025, 2, 1, 0, 30, tzinfo=plus_one)) == "202501"
    # 20:00 on Dec 31st in UTC-5 is already the next year in UTC.
    minus_five = timezone(timedelta(hours=-5))
    assert month_key(datetime(2024, 12, 31, 20, 0, tzinfo=minus_five)) == "202501"


def test_naive_datetime_is_taken_as_utc() -> None:
    assert month_key(datetime(2025, 1, 31, 23, 59, 59)) == "202501"


def test_months_between_across_year_inclusive() -> None:
    start = datetime(2024, 11, 30, 23, 0, tzinfo=UTC)
    end = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
    assert months_between(start, end) == ["202411", "202412", "202501", "202502"]


def test_months_between_accepts_keys_and_handles_edge_cases() -> None:
    assert months_between("202412", "202412") == ["202412"]
    assert months_between("202501", "202412") == []
    assert len(months_between("202001", "202412")) == 60


def test_next_month_and_start() -> None:
    assert next_month("202412") == "202501"
    assert next_month("202501") == "202502"
    assert month_start("202502") == datetime(2025, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2025", "202513", "202500", "2025-01", "19691", "abcdef"])
def test_parse_month_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid month"):
        parse_month(bad)


def test_names() -> None:
    assert history_collection_name("acc_1", "202501") == "fax_history_acc_1_202501"
    assert document_bucket_name("acc_1", "202501") == "documents_acc_1_202501"
    moment = datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC)
    assert history_collection_name("acc-2", moment) == "fax_history_acc-2_202501"


@pytest.mark.parametrize(
    "bad",
    ["", "Acc", "acc.1", "acc$1", "_acc", "-acc", "acc 1", "ä", "a" * (MAX_ACCOUNT_ID_LENGTH + 1)],
)
def test_unsafe_account_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid account id"):
        validate_account_id(bad)
    with pytest.raises(ValueError, match="invalid account id"):
        history_collection_name(bad, "202501")


def test_longest_names_fit_ferretdb_and_mongodb_limits() -> None:
    longest = "a" * MAX_ACCOUNT_ID_LENGTH
    assert validate_account_id(longest) == longest
    chunks = document_bucket_name(longest, "202501") + ".chunks"
    assert len(chunks) <= 235  # FerretDB v1 collection name limit
    assert len("d" * 63 + "." + chunks) <= 255  # MongoDB namespace limit, longest db name
