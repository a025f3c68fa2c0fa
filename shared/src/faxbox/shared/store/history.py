"""Fax history: one collection per account and UTC month, read over date ranges.

A fax's history document lives in ``fax_history_<account>_<YYYYMM>`` of the month of
its ``created_at``. Months therefore partition time, so a query over a range visits the
months newest first (or oldest first) and concatenating their sorted results *is* the
time-ordered merge; it stops as soon as a page is full, so a page of recent faxes
touches one or two collections however long the range. Pages and cursors: see
:mod:`faxbox.shared.store.cursors`.

History documents must have a string ``_id`` and an aware (or UTC) ``created_at``.
The history-writer (``faxbox.history``) writes them, with the month's
``(created_at, _id)`` index and its day keys; this module only reads, lists months and
drops them (retention).

Day keys (:meth:`HistoryStore.query_keys`, schema in :mod:`faxbox.shared.store.day_keys`):
a listing reads the day documents of its range by ``_id`` (newest first; the owners
document only to filter by owner or direction), orders their entries by
``(created_at, _id)`` and fetches the fax documents by ``_id``. The fax document has the
final say: a fax is listed only where its ``created_at`` equals the entry's time (an
earlier event that arrives late moves it to an earlier entry, perhaps of an earlier day,
and the stale entry is skipped) and only if it matches the owner and direction asked for
(an entry that does not know them yet is checked on the document). Same cursor, order
and pages as :meth:`HistoryStore.query_range`, on MongoDB and FerretDB alike.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.store.cursors import MAX_PAGE_SIZE, Page, Position, page_of, start_position
from faxbox.shared.store.day_keys import (
    DIRECTIONS,
    OWNERS,
    TIMES,
    day_id,
    fax_id_of,
    owners_id,
)
from faxbox.shared.store.monthly import (
    HISTORY_PREFIX,
    MonthLike,
    as_utc,
    history_collection_name,
    history_keys_collection_name,
    month_key,
    months_between,
    parse_month,
    validate_account_id,
)

Doc = dict[str, Any]

_MS = timedelta(milliseconds=1)


class MonthCache(Protocol):
    """Something of this process that remembers what it wrote into a month."""

    def forget_month(self, account_id: str, month: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Candidate:
    created_at: datetime
    fax_id: str


class HistoryStore:
    """Reads an account's fax history a page at a time, lists and drops its months.

    A writer that caches what it wrote to a month (indexes created, day keys written)
    registers with :meth:`add_month_cache`, so that :meth:`drop_month` in the same
    process makes it forget the month. (Another process dropping a month is not
    noticed; retention runs in the history-writer's process.)
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self._month_caches: weakref.WeakSet[MonthCache] = weakref.WeakSet()

    def collection(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        return self.db[history_collection_name(account_id, month)]

    def keys_collection(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        return self.db[history_keys_collection_name(account_id, month)]

    def add_month_cache(self, cache: MonthCache) -> None:
        """Tell ``cache`` of every month :meth:`drop_month` drops (held weakly)."""
        self._month_caches.add(cache)

    async def query_range(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> Page:
        """History of ``account_id`` with ``start <= created_at < end``, one page at a time.

        ``filter`` is an extra MongoDB query ANDed to the range (e.g. ``{"status":
        "failed"}``). Pass the returned ``next_cursor`` back, with the same other
        arguments, to get the next page. Ordered by ``(created_at, _id)`` descending
        (ascending if ``newest_first`` is False).
        """
        start, end = _checked_range(account_id, start, end, limit)
        if end <= start:
            return Page(items=[], next_cursor=None)
        position = start_position(cursor, newest_first=newest_first)

        # ``end`` is exclusive: an end at 00:00 on the 1st does not touch that month.
        months = months_between(start, end - _MS)
        if position is not None:
            # Months beyond the cursor's have been read completely already.
            here = month_key(position.created_at)
            months = [m for m in months if (m <= here if newest_first else m >= here)]
        if newest_first:
            months.reverse()

        names = [history_collection_name(account_id, m) for m in months]
        existing = await self._existing(names)

        direction = DESCENDING if newest_first else ASCENDING
        beyond = "$lt" if newest_first else "$gt"
        conditions: list[Doc] = [{"created_at": {"$gte": start, "$lt": end}}]
        if position is not None:
            conditions.append(
                {
                    "$or": [
                        {"created_at": {beyond: position.created_at}},
                        {"created_at": position.created_at, "_id": {beyond: position.id}},
                    ]
                }
            )
        if filter:
            conditions.append(dict(filter))
        query = {"$and": conditions}

        wanted = limit + 1
        items: list[Doc] = []
        for name in names:
            if name not in existing:
                continue
            found = self.db[name].find(query).sort([("created_at", direction), ("_id", direction)])
            items.extend(await found.limit(wanted - len(items)).to_list())
            if len(items) >= wanted:
                break
        return page_of(items, limit, newest_first=newest_first)

    async def query_keys(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        *,
        user_id: str | None = None,
        direction: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
        without: Sequence[str] = (),
    ) -> Page:
        """Like :meth:`query_range` (same order, cursor and pages) through the day keys.

        Filters are limited to the owner (``user_id``) and ``direction``; anything else
        needs :meth:`query_range`. Only faxes whose day keys were written (by the
        history-writer) are found. ``without`` names top-level fields left out of the
        items (a list needs no timeline: less to encode and decode).
        """
        if {"_id", "created_at", "user_id", "direction"} & set(without):
            raise ValueError("_id, created_at, user_id and direction are needed to check items")
        projection = {name: 0 for name in without} or None
        start, end = _checked_range(account_id, start, end, limit)
        if end <= start:
            return Page(items=[], next_cursor=None)
        position = start_position(cursor, newest_first=newest_first)

        first, last = start.date(), (end - _MS).date()
        if position is not None:
            # Days beyond the cursor's have been read completely already.
            here = position.created_at.date()
            first, last = (first, min(last, here)) if newest_first else (max(first, here), last)
        days = _days(first, last, newest_first)
        names = {history_keys_collection_name(account_id, _month_of(d)) for d in days}
        # Reading a day of a missing collection costs no more than listing collections:
        # only a long range is worth skipping its empty months.
        existing = await self._existing(sorted(names)) if len(names) > 2 else names

        wanted = limit + 1
        items: list[Doc] = []
        for day in days:
            month = _month_of(day)
            keys_collection = self.keys_collection(account_id, month)
            if keys_collection.name not in existing:
                continue
            if user_id is None and direction is None:
                keys, owned = await keys_collection.find_one({"_id": day_id(day)}), None
            else:
                keys, owned = await asyncio.gather(
                    keys_collection.find_one({"_id": day_id(day)}),
                    keys_collection.find_one({"_id": owners_id(day)}),
                )
            if keys is None:
                continue
            candidates = _candidates(keys, owned or {}, start, end, position, user_id, direction)
            candidates.sort(key=lambda c: (c.created_at, c.fax_id), reverse=newest_first)
            history = self.collection(account_id, month)
            taken = 0
            while taken < len(candidates) and len(items) < wanted:
                # In order, a page's worth at a time: one find by _id each (FerretDB v1
                # evaluates {_id: {$in: [...]}} by decoding the whole collection).
                chunk = candidates[taken : taken + wanted - len(items)]
                taken += len(chunk)
                docs = await asyncio.gather(
                    *(history.find_one({"_id": c.fax_id}, projection) for c in chunk)
                )
                items.extend(
                    doc
                    for doc, c in zip(docs, chunk, strict=True)
                    if doc is not None and _listed_here(doc, c, user_id, direction)
                )
            if len(items) >= wanted:
                break
        return page_of(items, limit, newest_first=newest_first)

    async def months(self, account_id: str) -> list[str]:
        """Months (``YYYYMM``, oldest first) that have a history collection."""
        prefix = f"{HISTORY_PREFIX}{validate_account_id(account_id)}_"
        names = await self.db.list_collection_names()
        found = []
        for name in names:
            suffix = name.removeprefix(prefix)
            if suffix != name and len(suffix) == 6 and suffix.isdigit():
                found.append(parse_month(suffix))
        return sorted(found)

    async def drop_month(self, account_id: str, month: MonthLike) -> None:
        """Drop a whole month of history and its day keys (retention). Idempotent."""
        month = parse_month(month)
        await self.db.drop_collection(history_collection_name(account_id, month))
        await self.db.drop_collection(history_keys_collection_name(account_id, month))
        for cache in list(self._month_caches):
            cache.forget_month(account_id, month)

    async def _existing(self, names: list[str]) -> set[str]:
        # One listCollections for all months: querying a missing collection would be
        # harmless but costs a round trip per month of a long range.
        found = await self.db.list_collection_names(filter={"name": {"$in": names}})
        return set(found)


def _checked_range(
    account_id: str, start: datetime, end: datetime, limit: int
) -> tuple[datetime, datetime]:
    validate_account_id(account_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
    return as_utc(start), as_utc(end)


def _month_of(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


def _days(first: date, last: date, newest_first: bool) -> list[date]:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return days[::-1] if newest_first else days


def _candidates(
    keys: Doc,
    owned: Doc,
    start: datetime,
    end: datetime,
    position: Position | None,
    user_id: str | None,
    direction: str | None,
) -> list[_Candidate]:
    owners, directions = owned.get(OWNERS) or {}, owned.get(DIRECTIONS) or {}
    found = []
    for field, at in (keys.get(TIMES) or {}).items():
        if not isinstance(at, datetime):
            continue
        at = as_utc(at)
        if not start <= at < end:
            continue
        # Unknown (not yet written, or its change did not say) is left to the document.
        if user_id is not None and owners.get(field, user_id) != user_id:
            continue
        if direction is not None and directions.get(field, direction) != direction:
            continue
        candidate = _Candidate(at, fax_id_of(field))
        if position is not None:
            here, there = (at, candidate.fax_id), (position.created_at, position.id)
            if (here >= there) if position.newest_first else (here <= there):
                continue
        found.append(candidate)
    return found


def _listed_here(
    doc: Doc | None, candidate: _Candidate, user_id: str | None, direction: str | None
) -> bool:
    if doc is None or not isinstance(doc.get("created_at"), datetime):
        return False  # keys are written after the document; a dropped month, a bad doc
    return (
        as_utc(doc["created_at"]) == candidate.created_at
        and (user_id is None or doc.get("user_id") == user_id)
        and (direction is None or doc.get("direction") == direction)
    )
