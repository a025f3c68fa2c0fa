"""Fax history: one collection per account and UTC month, queried over date ranges.

A fax's history document lives in ``fax_history_<account>_<YYYYMM>`` of the month of
its ``created_at``. Months therefore partition time, so a query over a range visits the
months newest first (or oldest first) and concatenating their sorted results *is* the
time-ordered merge; it stops as soon as a page is full, so a page of recent faxes
touches one or two collections however long the range.

Order is total, ``(created_at, _id)``: faxes created in the same millisecond are
ordered by id. The opaque cursor holds the last ``(created_at, _id)`` returned and the
next page asks for what lies strictly beyond it, so pages never repeat or skip items,
even across month boundaries or runs of equal timestamps.

History documents must have a string ``_id`` and an aware (or UTC) ``created_at``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.store.errors import InvalidCursor
from faxbox.shared.store.monthly import (
    HISTORY_PREFIX,
    MonthLike,
    as_utc,
    history_collection_name,
    month_key,
    months_between,
    parse_month,
    validate_account_id,
)

Doc = dict[str, Any]

MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_CURSOR_VERSION = 1


class Page(BaseModel):
    """One page of history, plus the cursor of the next page (None on the last one)."""

    model_config = ConfigDict(frozen=True)

    items: list[Doc]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    created_at: datetime
    id: str
    newest_first: bool


def _to_ms(dt: datetime) -> int:
    # Integer milliseconds: exactly BSON's datetime, so equality with the stored value
    # holds (a float timestamp could be off by one in the last digit).
    return (as_utc(dt) - _EPOCH) // _MS


def encode_cursor(created_at: datetime, doc_id: str, *, newest_first: bool = True) -> str:
    """The opaque cursor meaning "after the item (created_at, doc_id)"."""
    payload = {"v": _CURSOR_VERSION, "t": _to_ms(created_at), "i": doc_id, "n": newest_first}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> _Position:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor("cannot be decoded") from None
    if not isinstance(payload, dict) or payload.get("v") != _CURSOR_VERSION:
        raise InvalidCursor("unknown version")
    t, doc_id, newest_first = payload.get("t"), payload.get("i"), payload.get("n")
    if not isinstance(t, int) or not isinstance(doc_id, str) or not isinstance(newest_first, bool):
        raise InvalidCursor("malformed position")
    try:
        created_at = _EPOCH + t * _MS
    except OverflowError:
        raise InvalidCursor("time out of range") from None
    return _Position(created_at, doc_id, newest_first)


async def _existing(db: AsyncDatabase[Doc], names: list[str]) -> set[str]:
    # One listCollections for all months: querying a missing collection would be
    # harmless but costs a round trip per month of a long range.
    found = await db.list_collection_names(filter={"name": {"$in": names}})
    return set(found)


async def query_range(
    db: AsyncDatabase[Doc],
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
    validate_account_id(account_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return Page(items=[], next_cursor=None)

    position = None if cursor is None else _decode_cursor(cursor)
    if position is not None and position.newest_first != newest_first:
        raise InvalidCursor("it belongs to a query in the other order")

    # ``end`` is exclusive: an end at 00:00 on the 1st does not touch that month.
    months = months_between(start, end - _MS)
    if position is not None:
        # Months beyond the cursor's have been read completely already.
        here = month_key(position.created_at)
        months = [m for m in months if (m <= here if newest_first else m >= here)]
    if newest_first:
        months.reverse()

    names = [history_collection_name(account_id, m) for m in months]
    existing = await _existing(db, names)

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

    # One more than a page tells whether a next page exists without another query.
    wanted = limit + 1
    items: list[Doc] = []
    for name in names:
        if name not in existing:
            continue
        found = db[name].find(query).sort([("created_at", direction), ("_id", direction)])
        items.extend(await found.limit(wanted - len(items)).to_list())
        if len(items) >= wanted:
            break

    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    items = items[:limit]
    last = items[-1]
    return Page(
        items=items,
        next_cursor=encode_cursor(last["created_at"], last["_id"], newest_first=newest_first),
    )


class HistoryStore:
    """Writes history documents into the right month and keeps its index in place.

    The per-month index on ``(created_at, _id)`` is created when a month collection is
    first written by this process, and remembered, so the steady state costs nothing.
    (Another process dropping a collection we indexed is not noticed; retention runs
    through :meth:`drop_month`, which forgets the month.)
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self._indexed: set[str] = set()

    def collection(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        return self.db[history_collection_name(account_id, month)]

    async def ensure_history_indexes(self, account_id: str, month: MonthLike) -> None:
        name = history_collection_name(account_id, month)
        if name in self._indexed:
            return
        await self.db[name].create_indexes(
            [IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_at_id")]
        )
        self._indexed.add(name)

    async def insert(self, account_id: str, doc: Mapping[str, Any]) -> str:
        """Insert ``doc`` into the collection of its ``created_at`` month; return its name."""
        created_at = doc.get("created_at")
        if not isinstance(created_at, datetime) or not isinstance(doc.get("_id"), str):
            raise ValueError("a history document needs a str _id and a datetime created_at")
        month = month_key(created_at)
        await self.ensure_history_indexes(account_id, month)
        coll = self.collection(account_id, month)
        await coll.insert_one(dict(doc))
        return coll.name

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
        return await query_range(
            self.db,
            account_id,
            start,
            end,
            filter=filter,
            limit=limit,
            cursor=cursor,
            newest_first=newest_first,
        )

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
        """Drop a whole month of history (retention). Idempotent."""
        name = history_collection_name(account_id, month)
        await self.db.drop_collection(name)
        self._indexed.discard(name)
