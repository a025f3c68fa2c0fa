"""Writing changes to the database, a batch at a time.

``MongoHistoryWriter`` applies a batch of changes: per account-month collection,
unordered ``update`` commands of ``_id`` upserts (changes of the same fax merged first),
spread over a few lanes that run at once, and beside them the upserts of the month's
day keys (one per day touched, see ``faxbox.shared.store.day_keys``) that let the portal
list a range without a scan.

``BatchingRecorder`` is what handlers call: it gathers the changes of the deliveries in
hand for up to ``max_delay_s`` or ``max_batch`` changes, writes them together and only
then lets each handler return, so a message is acked only after its write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from faxbox.history.changes import Change, merge_changes
from faxbox.history.day_keys import KeyEntry
from faxbox.history.ports import ChangeSink
from faxbox.history.upserts import run_upserts
from faxbox.history.writes import HistoryWrites
from faxbox.shared.settling import settle
from faxbox.shared.store import HistoryStore

log = logging.getLogger(__name__)

Doc = dict[str, Any]


Lane = list[tuple[AsyncCollection[Doc], list[Doc]]]
# A lane is worth its contention from this many upserts in a batch on (see streams_for).
UPSERTS_PER_LANE = 100


class MongoHistoryWriter:
    """Writes a large batch's documents in up to ``lanes`` concurrent command streams.

    A batch of fewer than ``2 * min_upserts_per_lane`` upserts is written in one stream,
    then its day keys (see ``streams_for``).

    Why lanes: on FerretDB every upsert is read, decode, apply, encode and write, one
    statement after the other within a command, so one stream of commands keeps one of
    the server's cores busy while the other waits. Two streams let it use both.

    What keeps them safe on FerretDB v1, which loses updates when two connections
    update the same document at once: a fax's changes always go to the same lane (by
    a hash of its id), in order, so no document is written by two lanes; the day key
    documents, which many faxes share, are written by one more stream of their own.
    That stream runs beside the lanes rather than after them (it was ~15 % of a
    batch's time): a key whose document is not written yet, or whose write failed and
    comes back with the batch, is skipped by listings, which fetch every document a key
    names and list only the ones that exist and agree with it. Each stream holds at
    most one command of ``STATEMENTS_PER_COMMAND`` at a time, which keeps FerretDB's
    per-database pool of 100 connections far from the exhaustion that deadlocks it
    (see ``run_upserts``).
    """

    def __init__(
        self,
        history: HistoryStore,
        *,
        lanes: int = 2,
        min_upserts_per_lane: int = UPSERTS_PER_LANE,
    ) -> None:
        if lanes < 1 or min_upserts_per_lane < 1:
            raise ValueError("lanes and min_upserts_per_lane must be at least 1")
        self.writes = HistoryWrites(history)
        self.lanes = lanes
        self.min_upserts_per_lane = min_upserts_per_lane

    async def apply(self, changes: Sequence[Change]) -> None:
        by_collection: dict[tuple[str, str], list[Change]] = defaultdict(list)
        merged = merge_changes(list(changes))
        for change in merged:
            by_collection[(change.account_id, change.month)].append(change)
        for account_id, month in by_collection:
            await self.writes.ensure_history_indexes(account_id, month)
        keys = [
            (account, month, [_key_entry(c) for c in group])
            for (account, month), group in by_collection.items()
        ]
        lanes = self._lanes(by_collection, streams=self.streams_for(len(merged)))
        if len(lanes) == 1:
            # Keys after the documents, so a key never points at nothing for long; if
            # this fails the batch is not acked and comes back (both are idempotent).
            await _run_lane(lanes[0])
            await self._write_keys(keys)
            return
        outcomes = await asyncio.gather(
            *(_run_lane(lane) for lane in lanes), self._write_keys(keys), return_exceptions=True
        )
        # All streams have ended before this raises: none is left writing in the
        # background while the batch is retried.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def streams_for(self, upserts: int) -> int:
        """Lanes for a batch: more than one only for a backlog worth spreading.

        Concurrent writers of one FerretDB database queue for SQLite's single write
        lock, and a writer that finds it taken sleeps (busy_timeout: 1, 2, 5, 10 ms...).
        That is the price of lanes for every other user of the database (the
        transmitter's channel leases at dial time); it buys throughput only when a batch
        is large enough to keep both cores busy. With a few dozen changes per batch
        (the end-to-end benchmark's load) one stream is what runs.
        """
        return max(1, min(self.lanes, upserts // self.min_upserts_per_lane))

    def _lanes(
        self, by_collection: dict[tuple[str, str], list[Change]], *, streams: int
    ) -> list[Lane]:
        lanes: list[Lane] = [[] for _ in range(streams)]
        for (account_id, month), group in by_collection.items():
            collection = self.writes.collection(account_id, month)
            upserts: list[list[Doc]] = [[] for _ in range(streams)]
            for change in group:
                upserts[lane_of(change.fax_id, streams)].append(
                    {"q": {"_id": change.fax_id}, "u": change.upsert, "upsert": True}
                )
            for lane, part in zip(lanes, upserts, strict=True):
                if part:
                    lane.append((collection, part))
        return [lane for lane in lanes if lane] or [[]]

    async def _write_keys(self, keys: list[tuple[str, str, list[KeyEntry]]]) -> None:
        for account_id, month, entries in keys:
            await self.writes.write_keys(account_id, month, entries)


def lane_of(fax_id: str, lanes: int) -> int:
    # crc32, not hash(): the same fax must map to the same lane in every batch of a run.
    return zlib.crc32(fax_id.encode()) % lanes


async def _run_lane(lane: Lane) -> None:
    for collection, upserts in lane:
        # Small commands of at most 20 statements: see run_upserts.
        await run_upserts(collection, upserts)


def _key_entry(change: Change) -> KeyEntry:
    facts: Doc = change.upsert.get("$set", {})
    return KeyEntry(
        fax_id=change.fax_id,
        created_at=change.upsert["$min"]["created_at"],
        user_id=facts.get("user_id"),
        direction=facts.get("direction"),
    )


class BatchingRecorder:
    """Gathers changes from concurrent handlers and writes them, one batch at a time.

    One batch at a time on purpose: FerretDB v1 (SQLite backend) loses updates when two
    connections update the same document at once (200 concurrent ``$inc`` of one
    document left it at 8 on this machine), so changes of one fax must never be in
    flight together. While a batch is being written the next one fills up, so under
    load batches grow towards ``max_batch`` by themselves.
    """

    def __init__(
        self, sink: ChangeSink, *, max_batch: int = 200, max_delay_s: float = 0.02
    ) -> None:
        self.sink = sink
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._pending: list[tuple[Change, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def record(self, change: Change) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((change, future))
        self._wakeup.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        backlog = False
        while True:
            await self._wakeup.wait()
            if not backlog and len(self._pending) < self.max_batch and self.max_delay_s > 0:
                # Let the other deliveries in hand join this batch. Not when changes
                # piled up during the last write: under load that pile is the batch,
                # and waiting would only leave the database idle (~4 % of the time).
                await asyncio.sleep(self.max_delay_s)
            batch = self._pending[: self.max_batch]
            self._pending = self._pending[self.max_batch :]
            if not self._pending:
                self._wakeup.clear()
            if batch:
                await self._write(batch)
            # A pile of a tenth of a full batch means load; a few changes that came in
            # during a short write are better gathered for max_delay first, as ever.
            backlog = len(self._pending) >= max(1, self.max_batch // 10)

    async def _write(self, batch: list[tuple[Change, asyncio.Future[None]]]) -> None:
        try:
            await self.sink.apply([change for change, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                settle(batch[0][1], exc)
                return
            # One bad change must not fail its neighbours: write them one by one, so
            # only the faulty message is retried (and eventually dead-lettered).
            log.warning("batch of %d failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                await self._write([item])
        else:
            for _, future in batch:
                settle(future, None)

    async def close(self) -> None:
        """Stop the writing task (after the consumer stopped: its handlers have returned).

        Anything still pending fails, so its message is not acked and comes back.
        """
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for _, future in self._pending:
            settle(future, RuntimeError("history recorder closed"))
        self._pending = []
