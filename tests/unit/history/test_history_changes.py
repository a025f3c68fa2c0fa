"""History changes and the batching recorder, without a database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from faxbox.history.adapters import BatchingRecorder
from faxbox.history.changes import (
    Change,
    change_for,
    changes_for,
    created_at_bound,
    merge_changes,
    summary,
)
from faxbox.history.handlers import record_event
from faxbox.shared.bus import TransientError
from faxbox.shared.contracts import (
    FailureClass,
    FailureReason,
    FaxAttemptStarted,
    FaxFailed,
    FaxFailure,
    FaxSent,
    PageReport,
)
from faxbox.shared.store import FaxStatus, StatusRank
from faxbox.shared.store.records import retrying_rank
from faxbox.shared.store.retention import expired_months, first_month_kept
from tests.integration.history._events import inbound, outbound_failed, outbound_sent, rejected

T0 = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)


def test_created_at_stays_inside_the_month_of_the_fax() -> None:
    assert created_at_bound(T0, "202611") == T0
    after = datetime(2026, 12, 1, 0, 0, 3, tzinfo=UTC)
    assert created_at_bound(after, "202611") == datetime(
        2026, 11, 30, 23, 59, 59, 999000, tzinfo=UTC
    )
    before = datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)  # a producer's clock behind
    assert created_at_bound(before, "202611") == datetime(2026, 11, 1, tzinfo=UTC)
    assert created_at_bound(datetime(2026, 11, 5, 1, 2, 3, 456789, tzinfo=UTC), "202611") == (
        datetime(2026, 11, 5, 1, 2, 3, 456000, tzinfo=UTC)
    )


def test_statuses_are_ranked_so_outcomes_win_over_progress() -> None:
    requested, failed1, failed2, sent, note = (change_for(e) for e in outbound_sent("f", "a", T0))
    assert requested.status is not None
    assert failed1.status is not None
    assert failed2.status is not None
    assert sent.status is not None
    assert requested.status.rank < failed1.status.rank < failed2.status.rank < sent.status.rank
    assert note.status is None
    failed = change_for(outbound_failed("f", "a", T0)[-1])
    assert failed.status is not None
    assert failed2.status.rank < failed.status.rank < sent.status.rank
    assert retrying_rank(10_000) < StatusRank.REJECTED
    assert change_for(rejected("f", "a", T0)).status.rank == StatusRank.REJECTED  # type: ignore[union-attr]


def test_every_event_of_a_story_is_one_timeline_entry_built_from_the_event_alone() -> None:
    for event in [*outbound_sent("f", "a", T0), *inbound("g", "a", T0, ok=False)]:
        first, again = change_for(event), change_for(event)
        assert first.upsert == again.upsert
        (entry,) = first.upsert["$addToSet"]["timeline"]["$each"]
        assert entry["message_id"] == event.message_id
        assert entry["type"] == type(event).__name__
        assert entry["summary"]


def test_merging_keeps_extremes_every_entry_once_and_the_highest_status() -> None:
    events = outbound_sent("f", "a", T0)
    changes = [change_for(e) for e in [*reversed(events), *events]]
    changes.append(change_for(inbound("other", "a", T0)[0]))
    merged = merge_changes(changes)
    assert [c.fax_id for c in merged] == ["f", "other"]
    one = merged[0]
    assert one.events == 10
    assert one.upsert["$min"]["created_at"] == T0
    assert one.upsert["$max"]["updated_at"] == T0 + timedelta(minutes=11)
    assert one.upsert["$max"]["attempts"] == 3
    assert len(one.upsert["$addToSet"]["timeline"]["$each"]) == 5
    assert len(one.upsert["$addToSet"]["notifications"]["$each"]) == 1
    assert one.status is not None
    assert one.status.fields["status"] == FaxStatus.sent.value
    # The inputs are left as they were.
    assert len(changes[0].upsert["$addToSet"]["timeline"]["$each"]) == 1


def test_merging_changes_of_different_faxes_is_refused() -> None:
    a, b = change_for(inbound("a", "acc", T0)[0]), change_for(inbound("b", "acc", T0)[0])
    with pytest.raises(ValueError, match="same document"):
        a.merge(b)


@pytest.mark.parametrize(
    ("keep", "now", "first"),
    [
        (1, datetime(2026, 11, 30, tzinfo=UTC), "202611"),
        (2, datetime(2026, 1, 1, tzinfo=UTC), "202512"),
        (13, datetime(2026, 1, 31, tzinfo=UTC), "202501"),
    ],
)
def test_months_to_keep_counts_back_from_the_current_month(
    keep: int, now: datetime, first: str
) -> None:
    assert first_month_kept(keep, now) == first


def test_expired_months_are_the_older_ones() -> None:
    months = ["202509", "202510", "202511", "202612"]
    assert expired_months(months, 3, datetime(2025, 12, 2, tzinfo=UTC)) == ["202509"]
    with pytest.raises(ValueError, match="at least 1"):
        first_month_kept(0, T0)


class FakeSink:
    def __init__(self, fail_fax: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_fax = fail_fax
        self.in_flight = 0
        self.max_in_flight = 0

    async def apply(self, changes: Sequence[Change]) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if any(c.fax_id == self.fail_fax for c in changes):
                raise RuntimeError("document too large")
            self.batches.append([c.fax_id for c in changes])
        finally:
            self.in_flight -= 1


async def test_the_recorder_batches_and_writes_one_batch_at_a_time() -> None:
    sink = FakeSink()
    recorder = BatchingRecorder(sink, max_batch=10, max_delay_s=0.01)
    changes = [change_for(inbound(f"f{i}", "a", T0)[0]) for i in range(35)]
    await asyncio.gather(*(recorder.record(c) for c in changes))
    await recorder.close()
    assert sorted(f for batch in sink.batches for f in batch) == sorted(c.fax_id for c in changes)
    assert max(len(b) for b in sink.batches) == 10
    assert len(sink.batches) <= 5
    assert sink.max_in_flight == 1


async def test_a_bad_change_fails_alone() -> None:
    sink = FakeSink(fail_fax="f3")
    recorder = BatchingRecorder(sink, max_batch=10, max_delay_s=0.01)
    changes = [change_for(inbound(f"f{i}", "a", T0)[0]) for i in range(6)]
    results = await asyncio.gather(*(recorder.record(c) for c in changes), return_exceptions=True)
    await recorder.close()
    failed = [c.fax_id for c, r in zip(changes, results, strict=True) if isinstance(r, Exception)]
    assert failed == ["f3"]


async def test_a_database_error_is_transient() -> None:
    from pymongo.errors import AutoReconnect

    class Down:
        async def record(self, change: Change) -> None:
            raise AutoReconnect("connection refused")

    with pytest.raises(TransientError, match="connection refused"):
        await record_event(rejected("f", "a", T0), Down())


def test_equal_ranks_with_different_contents_are_left_to_the_server() -> None:
    _requested, failed1, *_ = outbound_sent("f", "a", T0)
    other = failed1.model_copy(
        update={"message_id": "other", "pages_sent": 2}  # a re-reported attempt 1
    )
    merged = merge_changes([change_for(failed1), change_for(other)])
    assert len(merged) == 2
    for change in merged:
        assert change.upsert["$max"]["state"]["rank"] == retrying_rank(1)


def test_the_state_is_one_sub_document_with_the_rank_first() -> None:
    sent = change_for(outbound_sent("f", "a", T0)[3])
    state = sent.upsert["$max"]["state"]
    assert next(iter(state)) == "rank"
    assert state["status"] == "sent"
    assert sent.upsert["$max"]["status_rank"] == StatusRank.SUCCEEDED
    assert "$setOnInsert" not in sent.upsert


async def test_changes_that_piled_up_during_a_write_are_written_without_waiting() -> None:
    class SlowFirstWrite:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []
            self.writing = asyncio.Event()
            self.release = asyncio.Event()

        async def apply(self, changes: Sequence[Change]) -> None:
            if not self.batches:
                self.writing.set()
                await self.release.wait()
            self.batches.append([c.fax_id for c in changes])

    sink = SlowFirstWrite()
    recorder = BatchingRecorder(sink, max_batch=20, max_delay_s=0.5)  # a pile of >= 2 is load
    first = asyncio.create_task(recorder.record(change_for(inbound("f0", "a", T0)[0])))
    await sink.writing.wait()
    piled = [
        asyncio.create_task(recorder.record(change_for(inbound(f"f{i}", "a", T0)[0])))
        for i in range(1, 4)
    ]
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    released = loop.time()
    sink.release.set()
    await asyncio.gather(first, *piled)
    waited = loop.time() - released
    await recorder.close()
    assert sink.batches == [["f0"], ["f1", "f2", "f3"]]
    assert waited < 0.25


def _page(number: int, confirmed: bool) -> PageReport:
    return PageReport(
        page=number,
        confirmed=confirmed,
        result="MCF" if confirmed else "RTN",
        bit_rate=9600,
        ecm=False,
        x_resolution=8031,
        y_resolution=3850,
        encoding="T.4 2D",
        length=1100,
        image_bytes=30_000,
        bad_rows=0,
        longest_bad_row_run=0,
        ecm_retries=0,
    )


def _started(attempt: int) -> FaxAttemptStarted:
    return FaxAttemptStarted(
        fax_id="f",
        account_id="a",
        month="202611",
        user_id="u",
        faxbox_id="b",
        destination="+12125550123",
        attempt=attempt,
        carrier_id="c",
        pages_total=3,
        occurred_at=T0,
    )


def test_each_call_moves_the_fax_forward_sending_then_retrying() -> None:
    requested, failed1, failed2, sent, _ = (change_for(e) for e in outbound_sent("f", "a", T0))
    ranks = [
        change.status.rank  # type: ignore[union-attr]
        for change in (
            requested,
            change_for(_started(1)),
            failed1,
            change_for(_started(2)),
            failed2,
            change_for(_started(3)),
            sent,
        )
    ]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)
    assert change_for(_started(2)).status.fields["status"] == "sending"  # type: ignore[union-attr]


def test_a_failure_after_some_pages_is_partially_sent_and_keeps_its_page_report() -> None:
    failed = outbound_failed("f", "a", T0)[-1]
    assert isinstance(failed, FaxFailed)
    report = (_page(1, True), _page(2, False))
    change = change_for(failed.model_copy(update={"page_report": report}))
    assert change.status is not None
    assert change.status.fields["status"] == FaxStatus.partially_sent.value
    assert [p["confirmed"] for p in change.status.fields["page_report"]] == [True, False]
    assert change.status.fields["result"]["reason"] is not None
    none_sent = change_for(failed.model_copy(update={"pages_sent": 0}))
    assert none_sent.status.fields["status"] == FaxStatus.failed.value  # type: ignore[union-attr]


def test_a_cancelled_fax_says_so() -> None:
    failed = outbound_failed("f", "a", T0)[-1]
    assert isinstance(failed, FaxFailed)
    cancelled = failed.model_copy(
        update={
            "pages_sent": 0,
            "failure": FaxFailure(
                failure_class=FailureClass.cancelled,
                code=-5,
                text="Cancelled.",
                reason=FailureReason.cancelled,
            ),
        }
    )
    status = change_for(cancelled).status
    assert status is not None
    assert status.fields["status"] == FaxStatus.cancelled.value
    assert status.fields["result"]["reason"] == "cancelled"


def test_a_rejected_submission_rejects_every_fax_it_named() -> None:
    event = rejected("f", "a", T0).model_copy(update={"fax_ids": ("f", "f-2", "f-3")})
    changes = changes_for(event)
    assert [c.fax_id for c in changes] == ["f", "f-2", "f-3"]
    assert all(c.status is not None and c.status.rank == StatusRank.REJECTED for c in changes)
    assert [c.fax_id for c in changes_for(rejected("g", "a", T0))] == ["g"]


def test_a_fax_carried_by_several_calls_says_how_many() -> None:
    sent = outbound_sent("f", "a", T0)[3]
    assert isinstance(sent, FaxSent)
    resumed = sent.model_copy(update={"calls": 2})
    change = change_for(resumed)
    assert change.upsert["$set"]["calls"] == 2
    assert summary(resumed).endswith(", carried by 2 calls")
    assert "carried by" not in summary(sent)
