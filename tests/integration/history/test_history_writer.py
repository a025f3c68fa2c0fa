"""The history-writer against the real database (FerretDB locally) and broker."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pymongo.errors import PyMongoError

from faxbox.history.adapters import BatchingRecorder, MongoHistoryWriter, lane_of
from faxbox.history.changes import change_for
from faxbox.history.service import Settings, service
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import FaxMessage
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import FaxStatus, HistoryRecord, StatusRank, Store
from faxbox.shared.store.monthly import history_collection_name
from tests.integration.history._events import (
    inbound,
    outbound_failed,
    outbound_sent,
    rejected,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)


def normal(doc: dict[str, Any] | None) -> dict[str, Any]:
    """The document as the portal reads it, without its id (compare across faxes)."""
    assert doc is not None
    return HistoryRecord.from_doc(doc).model_dump(exclude={"id"})


async def write_one_by_one(writer: MongoHistoryWriter, events: list[FaxMessage]) -> None:
    for event in events:
        await writer.apply([change_for(event)])


async def fetch(store: Store, account: str, month: str, fax_id: str) -> dict[str, Any] | None:
    return await store.history.collection(account, month).find_one({"_id": fax_id})


def renamed(events: list[FaxMessage], fax_id: str) -> list[FaxMessage]:
    return [e.model_copy(update={"fax_id": fax_id}) for e in events]


@pytest.mark.parametrize("story", ["sent", "failed", "inbound", "inbound_failed"])
async def test_shuffled_and_repeated_events_converge_to_the_same_document(
    store: Store, story: str
) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    events: list[FaxMessage] = {
        "sent": lambda: outbound_sent("fax_ref", account, T0),
        "failed": lambda: outbound_failed("fax_ref", account, T0),
        "inbound": lambda: inbound("fax_ref", account, T0),
        "inbound_failed": lambda: inbound("fax_ref", account, T0, ok=False),
    }[story]()
    writer = MongoHistoryWriter(store.history)
    await write_one_by_one(writer, events)
    expected = normal(await fetch(store, account, "202611", "fax_ref"))

    rng = random.Random(story)
    orders = [list(reversed(events))] + [rng.sample(events, len(events)) for _ in range(8)]
    for n, order in enumerate(orders):
        fax_id = f"fax_{n}"
        # Every event at least once, some twice or three times, in a shuffled order.
        repeated = order + rng.sample(order, k=len(order) // 2) + order[:1]
        await write_one_by_one(writer, renamed(repeated, fax_id))
        got = normal(await fetch(store, account, "202611", fax_id))
        assert got == expected, f"order {[type(e).__name__ for e in repeated]}"

    # The same events merged into one batch give the same document too.
    batched = renamed(rng.sample(events, len(events)) * 2, "fax_batched")
    await writer.apply([change_for(e) for e in batched])
    assert normal(await fetch(store, account, "202611", "fax_batched")) == expected


async def test_the_document_holds_what_the_events_said(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    events = outbound_sent("fax_1", account, T0)
    await write_one_by_one(MongoHistoryWriter(store.history), list(reversed(events)))
    record = HistoryRecord.from_doc(await fetch(store, account, "202611", "fax_1") or {})
    assert record.direction == "outbound"
    assert record.status is FaxStatus.sent
    assert record.result is None
    assert (record.pages, record.pages_total, record.attempts) == (3, 3, 3)
    assert record.remote_number == "+14155550123"
    assert record.local_number == "+14155550100"
    assert record.sender_email == "alice@example.com"
    assert record.statistics is not None
    assert record.statistics.remote_station_id == "REMOTE 1"
    assert set(record.documents) == {"original", "fax_tiff", "transmitted_tiff"}
    assert [n.kind for n in record.notifications] == ["sent"]
    assert [e.type for e in record.timeline] == [
        "OutboundFaxRequested",
        "FaxAttemptFailed",
        "FaxAttemptFailed",
        "FaxSent",
        "NotificationSent",
    ]
    assert record.created_at == T0
    assert record.updated_at == T0 + timedelta(minutes=11)


async def test_a_late_attempt_failure_never_overwrites_sent(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    requested, failed1, failed2, sent, _note = outbound_sent("fax_1", account, T0)
    writer = MongoHistoryWriter(store.history)
    await write_one_by_one(writer, [requested, sent, failed2, failed1])
    doc = await fetch(store, account, "202611", "fax_1")
    assert doc is not None
    assert doc["state"]["status"] == "sent"
    assert doc["status_rank"] == StatusRank.SUCCEEDED
    record = HistoryRecord.from_doc(doc)
    assert record.status is FaxStatus.sent
    assert record.result is None
    assert record.pages == 3
    # ...while the retries' story is still in the timeline.
    assert len(record.timeline) == 4


async def test_a_later_attempt_failure_replaces_an_earlier_one(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    requested, failed1, failed2, *_ = outbound_sent("fax_1", account, T0)
    await write_one_by_one(MongoHistoryWriter(store.history), [failed2, requested, failed1])
    record = HistoryRecord.from_doc(await fetch(store, account, "202611", "fax_1") or {})
    assert record.result is not None
    assert (record.status, record.result.code, record.attempts) == ("retrying", 21, 2)


async def test_a_rejection_records_every_reason(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    event = rejected("fax_r", account, T0)
    writer = MongoHistoryWriter(store.history)
    await write_one_by_one(writer, [event, event])
    record = HistoryRecord.from_doc(await fetch(store, account, "202611", "fax_r") or {})
    assert record.status is FaxStatus.rejected
    assert record.result is not None
    assert record.result.code == "invalid_number"
    assert [r["code"] for r in record.rejection_reasons] == ["invalid_number", "no_attachment"]
    assert record.remote_number == "555-0123"
    assert len(record.timeline) == 1


async def test_a_fax_created_on_the_last_second_of_a_month_stays_in_that_month(
    store: Store,
) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    last_second = datetime(2026, 11, 30, 23, 59, 59, 500000, tzinfo=UTC)
    events = outbound_sent("fax_eom", account, last_second, month="202611")
    assert events[-2].occurred_at.month == 12  # sent (and mailed) in December
    # Worst case: the December events arrive first.
    await write_one_by_one(MongoHistoryWriter(store.history), list(reversed(events)))

    assert await store.history.months(account) == ["202611"]
    doc = await fetch(store, account, "202611", "fax_eom")
    assert doc is not None
    assert doc["created_at"] == datetime(2026, 11, 30, 23, 59, 59, 500000, tzinfo=UTC)
    november = await store.history.query_range(
        account, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert [d["_id"] for d in november.items] == ["fax_eom"]
    december = await store.history.query_range(
        account, datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert december.items == []


async def test_an_inbound_call_ending_after_midnight_is_found_in_its_month(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    # Only the end of the call is reported: its event time is in the next month.
    events = inbound("fax_in", account, datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    events = [e.model_copy(update={"month": "202611"}) for e in events]
    await write_one_by_one(MongoHistoryWriter(store.history), events)
    november = await store.history.query_range(
        account, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert [d["_id"] for d in november.items] == ["fax_in"]
    assert november.items[0]["created_at"] == datetime(2026, 11, 30, 23, 59, 59, 999000, tzinfo=UTC)


async def test_the_batching_recorder_writes_concurrent_changes_once_each(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    writer = MongoHistoryWriter(store.history)
    recorder = BatchingRecorder(writer, max_batch=50, max_delay_s=0.01)
    stories = [outbound_sent(f"fax_{i}", account, T0 + timedelta(seconds=i)) for i in range(40)]
    events = [e for story in stories for e in story]
    random.Random(1).shuffle(events)
    await asyncio.gather(*(recorder.record(change_for(e)) for e in events + events[:30]))
    await recorder.close()
    docs = await store.history.collection(account, "202611").find({}).to_list()
    assert len(docs) == 40
    assert {d["state"]["status"] for d in docs} == {"sent"}
    assert {len(d["timeline"]) for d in docs} == {5}


async def test_lanes_write_a_batch_as_one_lane_does(store: Store) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    stories = [outbound_sent(f"fax_{i}", account, T0 + timedelta(seconds=i)) for i in range(30)]
    events = [e for story in stories for e in story]
    random.Random(3).shuffle(events)
    changes = [change_for(e) for e in events + events[:20]]
    assert {lane_of(c.fax_id, 3) for c in changes} == {0, 1, 2}

    await MongoHistoryWriter(store.history, lanes=3, min_upserts_per_lane=1).apply(changes)

    one_lane = MongoHistoryWriter(store.history, lanes=1)
    for i, story in enumerate(stories):
        await write_one_by_one(one_lane, renamed(story, f"fax_ref_{i}"))
        expected = normal(await fetch(store, account, "202611", f"fax_ref_{i}"))
        assert normal(await fetch(store, account, "202611", f"fax_{i}")) == expected
    listed = await store.history.query_range(account, T0, T0 + timedelta(minutes=1), limit=100)
    assert len(listed.items) == 60


def test_only_a_backlog_is_spread_over_lanes(store: Store) -> None:
    writer = MongoHistoryWriter(store.history, lanes=2, min_upserts_per_lane=100)
    assert [writer.streams_for(n) for n in (1, 150, 199, 200, 1000)] == [1, 1, 1, 2, 2]


async def test_a_failing_lane_raises_the_database_error_after_the_others_wrote(
    store: Store,
) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    good = [change_for(outbound_sent(f"fax_{i}", account, T0)[0]) for i in range(20)]
    bad = change_for(outbound_sent("fax_bad", account, T0)[0])
    bad.upsert["$set"]["$not_a_field"] = 1
    bad_lane = lane_of("fax_bad", 2)
    others = [c for c in good if lane_of(c.fax_id, 2) != bad_lane]
    assert others

    with pytest.raises(PyMongoError):
        await MongoHistoryWriter(store.history, lanes=2, min_upserts_per_lane=1).apply([bad, *good])

    for change in others:
        assert await fetch(store, account, "202611", change.fax_id) is not None


# --- through the broker --------------------------------------------------------------------


@pytest.fixture
async def running_history(
    broker_settings: BrokerSettings, mongo_settings: MongoSettings
) -> AsyncIterator[Settings]:
    settings = Settings(
        **broker_settings.model_dump(exclude={"prefetch"}),
        **mongo_settings.model_dump(),
        history_retention_interval_s=0,
    )
    runtime = Runtime("history")
    async with service(runtime, settings):
        yield settings


async def wait_for(check: Any, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_events_published_shuffled_and_twice_end_in_one_document(
    running_history: Settings, store: Store
) -> None:
    account = f"acc{uuid.uuid4().hex[:6]}"
    events = outbound_sent("fax_bus", account, T0)
    reference = renamed(events, "fax_ref_bus")
    await write_one_by_one(MongoHistoryWriter(store.history), reference)
    expected = normal(await fetch(store, account, "202611", "fax_ref_bus"))

    bus = Bus(running_history)
    await bus.connect()
    try:
        shuffled = random.Random(7).sample(events, len(events))
        await asyncio.gather(*(bus.publish(e) for e in shuffled + shuffled))
    finally:
        await bus.close()

    async def converged() -> bool:
        doc = await fetch(store, account, "202611", "fax_bus")
        return doc is not None and normal(doc) == expected

    await wait_for(converged)
    name = history_collection_name(account, "202611")
    assert name in await store.db.list_collection_names()


# --- any order, any repeats (hypothesis, on the real database) -----------------------------

_STORY = outbound_sent("fax_h", "acchypo", T0)
_REFERENCE: dict[str, Any] = {}


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(range(len(_STORY))),
    repeats=st.lists(st.integers(0, len(_STORY) - 1), max_size=6),
    batch=st.booleans(),
)
async def test_any_order_and_repeats_converge(
    store: Store, order: list[int], repeats: list[int], batch: bool
) -> None:
    writer = MongoHistoryWriter(store.history)
    if not _REFERENCE:
        await write_one_by_one(writer, renamed(_STORY, "fax_h_ref"))
        _REFERENCE.update(normal(await fetch(store, "acchypo", "202611", "fax_h_ref")))
    fax_id = f"fax_h_{uuid.uuid4().hex[:10]}"
    events = renamed([_STORY[i] for i in [*order, *repeats]], fax_id)
    if batch:
        await writer.apply([change_for(e) for e in events])
    else:
        await write_one_by_one(writer, events)
    assert normal(await fetch(store, "acchypo", "202611", fax_id)) == _REFERENCE
