"""Listing history through the day keys, against the real database (FerretDB locally)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from faxbox.history.adapters import MongoHistoryWriter
from faxbox.history.changes import change_for
from faxbox.history.day_keys import KeyEntry
from faxbox.history.writes import HistoryWrites
from faxbox.shared.store import Store, drop_month, stored_months
from faxbox.shared.store.monthly import history_keys_collection_name
from tests.integration.history._events import outbound_sent

pytestmark = pytest.mark.integration


def account() -> str:
    return f"acc{uuid.uuid4().hex[:8]}"


async def walk(store: Store, account_id: str, keys: bool, **kwargs: Any) -> list[list[str]]:
    query = store.history.query_keys if keys else store.history.query_range
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await query(account_id, cursor=cursor, **kwargs)
        pages.append([d["_id"] for d in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100, "pagination does not end"


@pytest.fixture(scope="module")
async def three_months(store: Store) -> str:
    """60 faxes over Nov 2024 - Jan 2025: runs of equal times, month edges, two owners."""
    writes = HistoryWrites(store.history)
    account_id = account()
    for month_start in (
        datetime(2024, 11, 1, tzinfo=UTC),
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    ):
        for i in range(20):
            if i == 0:
                at = month_start
            elif i == 19:
                at = month_start + timedelta(days=28) - timedelta(milliseconds=1)
            elif 3 <= i <= 8:
                at = month_start + timedelta(days=3)  # six in the same millisecond
            else:
                at = month_start + timedelta(days=i // 2, hours=i)
            doc = {
                "_id": f"fax_{uuid.uuid4().hex[:12]}",  # id order is not insertion order
                "created_at": at,
                "user_id": "usr_a" if i % 3 else "usr_b",
                "direction": "inbound" if i % 4 == 0 else "outbound",
            }
            await writes.insert(account_id, doc)
    return account_id


@pytest.mark.parametrize(
    ("start", "end", "limit", "newest_first"),
    [
        (datetime(2024, 10, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC), 7, True),
        (datetime(2024, 11, 4, tzinfo=UTC), datetime(2025, 1, 4, tzinfo=UTC), 4, False),
        (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), 20, True),
    ],
)
async def test_keys_give_the_pages_of_the_range_query(
    store: Store,
    three_months: str,
    start: datetime,
    end: datetime,
    limit: int,
    newest_first: bool,
) -> None:
    kwargs = {"start": start, "end": end, "limit": limit, "newest_first": newest_first}
    expected = await walk(store, three_months, keys=False, **kwargs)
    assert sum(map(len, expected)) >= limit  # at least a full page (exactly one: Dec)
    assert await walk(store, three_months, keys=True, **kwargs) == expected


async def test_keys_filter_by_owner_and_direction(store: Store, three_months: str) -> None:
    span = {"start": datetime(2024, 11, 1, tzinfo=UTC), "end": datetime(2025, 2, 1, tzinfo=UTC)}
    for user_id, direction in [("usr_b", None), (None, "inbound"), ("usr_a", "inbound")]:
        query: dict[str, Any] = {}
        if user_id:
            query["user_id"] = user_id
        if direction:
            query["direction"] = direction
        expected = await walk(store, three_months, keys=False, filter=query, limit=5, **span)
        got = await walk(
            store, three_months, keys=True, user_id=user_id, direction=direction, limit=5, **span
        )
        assert got == expected
        assert sum(map(len, got)) > 0


async def test_the_document_has_the_final_say_over_its_keys(store: Store) -> None:
    writes = HistoryWrites(store.history)
    account_id = account()
    at = datetime(2025, 3, 5, 12, tzinfo=UTC)
    await writes.insert(account_id, {"_id": "bobs", "created_at": at, "user_id": "bob"})
    # Keys claiming bob's fax for alice, a time it does not have, a fax that is missing.
    await writes.write_keys(
        account_id,
        "202503",
        [
            KeyEntry("bobs", at, user_id="alice"),
            KeyEntry("bobs", at + timedelta(days=1), user_id="bob"),
            KeyEntry("missing", at, user_id="alice"),
        ],
    )
    span = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    assert (await store.history.query_keys(account_id, *span, user_id="alice")).items == []
    page = await store.history.query_keys(account_id, *span, limit=1)
    assert [d["_id"] for d in page.items] == ["bobs"]
    assert page.next_cursor is None  # the stale entry of the 6th is not a next page

    # Keys that do not know the owner or direction leave it to the document.
    doc = {"_id": "alices", "created_at": at, "user_id": "alice", "direction": "inbound"}
    await store.history.collection(account_id, "202503").insert_one(doc)
    await writes.write_keys(account_id, "202503", [KeyEntry("alices", at)])
    for user_id, direction in [("alice", None), (None, "inbound")]:
        page = await store.history.query_keys(
            account_id, *span, user_id=user_id, direction=direction
        )
        assert [d["_id"] for d in page.items] == ["alices"]
    assert (await store.history.query_keys(account_id, *span, direction="outbound")).items == []


async def test_writer_keys_list_each_fax_once_where_it_was_created(store: Store) -> None:
    account_id = account()
    writer = MongoHistoryWriter(store.history)
    # Requested at 23:58 on the 9th, the rest on the 10th; the request arrives last,
    # so the fax is first keyed on the 10th and then moves to the 9th.
    late = outbound_sent("fax_late", account_id, datetime(2026, 11, 9, 23, 58, tzinfo=UTC))
    await writer.apply([change_for(e) for e in late[3:]])
    early = [
        *outbound_sent("fax_early", account_id, datetime(2026, 11, 9, 23, 57, tzinfo=UTC)),
        *outbound_sent("fax_next", account_id, datetime(2026, 11, 10, 8, tzinfo=UTC)),
    ]
    await writer.apply([change_for(e) for e in early])
    span = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    before = await store.history.query_keys(account_id, *span)
    assert [d["_id"] for d in before.items] == ["fax_next", "fax_late", "fax_early"]

    await writer.apply([change_for(e) for e in late[:3]])
    await writer.apply([change_for(e) for e in late])  # repeats change nothing
    for kwargs in ({}, {"user_id": "usr_1", "direction": "outbound"}):
        pages = await walk(
            store, account_id, keys=True, start=span[0], end=span[1], limit=1, **kwargs
        )
        assert pages == [["fax_next"], ["fax_late"], ["fax_early"]]
    keys = store.history.keys_collection(account_id, "202611")
    days = {"20261109", "20261110"}
    assert {d["_id"] async for d in keys.find({})} == days | {f"{d}-owners" for d in days}


async def test_dropping_a_month_drops_its_day_keys(store: Store) -> None:
    writes = HistoryWrites(store.history)
    account_id = account()
    at = datetime(2025, 6, 10, tzinfo=UTC)
    await writes.insert(account_id, {"_id": "f1", "created_at": at})
    await writes.insert(account_id, {"_id": "f2", "created_at": at + timedelta(days=31)})
    await drop_month(store, account_id, "202506")
    names = await store.db.list_collection_names()
    assert history_keys_collection_name(account_id, "202506") not in names
    assert history_keys_collection_name(account_id, "202507") in names
    assert await stored_months(store, account_id) == ["202507"]

    # Day keys left behind (a drop interrupted between its steps) still count as a month,
    # so retention finishes the job.
    await writes.write_keys(account_id, "202505", [KeyEntry("gone", at.replace(month=5))])
    assert await stored_months(store, account_id) == ["202505", "202507"]
    await drop_month(store, account_id, "202505")
    assert await stored_months(store, account_id) == ["202507"]
