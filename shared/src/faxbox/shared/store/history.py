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

Day keys (:func:`query_keys`). FerretDB v1 (SQLite backend) evaluates every filter but
``_id`` equality, and every sort, in Go over all documents of the collection, so the
range query above decodes a whole month per page (1.7 s for 8,500 faxes). Next to each
month's history collection the writers therefore keep ``fax_keys_<account>_<YYYYMM>``:
per UTC day, a document ``YYYYMMDD`` mapping each fax created that day to its
``created_at``, and a document ``YYYYMMDD-owners`` with its owner and direction::

    {"_id": "20261127", "t": {"fax_01J...": <created_at>, ...}}
    {"_id": "20261127-owners", "u": {"fax_01J...": "usr_..."}, "d": {"fax_01J...": "inbound"}}

(field names are the fax ids percent-encoded, so ``.`` and ``$`` cannot occur). They are
written like the history itself: ``$min`` of the time, ``$set`` of facts, so any order and
any repeat of the writes give the same documents. A listing reads the day documents of
its range by ``_id`` (newest first; the owners document only to filter by owner or
direction), orders their entries by ``(created_at, _id)`` and fetches the fax documents
by ``_id``. The fax document has the final say: a fax is listed only where its
``created_at`` equals the entry's time (an earlier event that arrives late moves it to
an earlier entry, perhaps of an earlier day, and the stale entry is skipped) and only if
it matches the owner and direction asked for (an entry that does not know them yet is
checked on the document). Same cursor, order and pages as :func:`query_range`, on
MongoDB and FerretDB alike.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import WriteError

from faxbox.shared.store.errors import InvalidCursor
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

log = logging.getLogger(__name__)

Doc = dict[str, Any]

MAX_PAGE_SIZE = 1000
_DUPLICATE_KEY = 11000
# FerretDB v1.24 keeps every statement's SQLite connection (a pool of 100 per
# database) until the whole ``update`` command ends (a ``defer`` inside its loop,
# msg_update.go), so one command of ~100 statements, or several at once, deadlocks the
# server (seen three times). It runs statements one by one anyway: small commands cost
# nothing.
STATEMENTS_PER_COMMAND = 20
_KEYED_MAX = 200_000
# Owners and directions of a day live in a second document, "<YYYYMMDD>-owners": an
# account's listing needs only the times, and FerretDB decodes a whole document to read
# it (274 faxes a day: 6.4 ms for one document of times, owners and directions, 2.4 ms
# for the times alone).
_OWNERS = "-owners"
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


def _day_id(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _fax_key(fax_id: str) -> str:
    if not fax_id:
        raise ValueError("a fax id must not be empty")
    # Field names: no "." (a path) nor "$" (an operator); "%" escaped first, so
    # unquote() reverses it exactly.
    return fax_id.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What a write tells the day keys about one fax (owner/direction if it knows)."""

    fax_id: str
    created_at: datetime
    user_id: str | None = None
    direction: str | None = None


def key_updates(entries: Iterable[KeyEntry]) -> list[Doc]:
    """``update`` statements (``_id`` upserts, two per day) recording ``entries``.

    All entries must belong to one account-month collection (their ``created_at`` in
    that month, as history documents' always are).
    """
    by_day: dict[str, dict[str, Doc]] = {}
    for entry in entries:
        at = _from_ms(_to_ms(entry.created_at))
        ops = by_day.setdefault(_day_id(at.date()), {"$min": {}, "$set": {}})
        key = _fax_key(entry.fax_id)
        earlier = ops["$min"].get(f"t.{key}")
        ops["$min"][f"t.{key}"] = at if earlier is None else min(earlier, at)
        if entry.user_id is not None:
            ops["$set"][f"u.{key}"] = entry.user_id
        if entry.direction is not None:
            ops["$set"][f"d.{key}"] = entry.direction
    updates = []
    for day, ops in sorted(by_day.items()):
        updates.append({"q": {"_id": day}, "u": {"$min": ops["$min"]}, "upsert": True})
        if ops["$set"]:
            updates.append(
                {"q": {"_id": day + _OWNERS}, "u": {"$set": ops["$set"]}, "upsert": True}
            )
    return updates


async def run_upserts(collection: AsyncCollection[Doc], updates: Sequence[Doc]) -> None:
    """Run ``_id`` upsert statements, a small unordered command at a time.

    The ``update`` command is sent as is rather than through ``bulk_write``: FerretDB's
    reply to a batch with a write error lacks ``nModified``, which PyMongo's bulk API
    cannot parse (KeyError), so the write errors are read from the reply here.
    """
    for start in range(0, len(updates), STATEMENTS_PER_COMMAND):
        await _run_command(collection, list(updates[start : start + STATEMENTS_PER_COMMAND]))


async def _run_command(collection: AsyncCollection[Doc], updates: list[Doc]) -> None:
    for attempt in (1, 2):
        reply = await collection.database.command(
            {"update": collection.name, "updates": updates, "ordered": False}
        )
        errors = reply.get("writeErrors") or []
        if not errors:
            return
        # Two writers upserting the same new _id at once: one insert loses with a
        # duplicate key. The document exists now, so running it again updates it.
        if attempt == 2 or any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise WriteError(
                f"{len(errors)} of {len(updates)} upserts into {collection.name} failed: "
                f"{errors[0].get('errmsg', errors[0])}",
                errors[0].get("code"),
                errors[0],
            )
        updates = [updates[e["index"]] for e in errors]
        log.info("retrying %d upserts that raced with another writer", len(updates))


def _from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


@dataclass(frozen=True, slots=True)
class _Candidate:
    created_at: datetime
    fax_id: str


def _days(first: date, last: date, newest_first: bool) -> list[date]:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return days[::-1] if newest_first else days


def _candidates(
    keys: Doc,
    owned: Doc,
    start: datetime,
    end: datetime,
    position: _Position | None,
    user_id: str | None,
    direction: str | None,
) -> list[_Candidate]:
    owners, directions = owned.get("u") or {}, owned.get("d") or {}
    found = []
    for key, at in (keys.get("t") or {}).items():
        if not isinstance(at, datetime):
            continue
        at = as_utc(at)
        if not start <= at < end:
            continue
        # Unknown (not yet written, or its change did not say) is left to the document.
        if user_id is not None and owners.get(key, user_id) != user_id:
            continue
        if direction is not None and directions.get(key, direction) != direction:
            continue
        candidate = _Candidate(at, unquote(key))
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


async def query_keys(
    db: AsyncDatabase[Doc],
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
    """Like :func:`query_range` (same order, cursor and pages) through the day keys.

    Filters are limited to the owner (``user_id``) and ``direction``; anything else
    needs :func:`query_range`. Only faxes whose day keys were written (by the
    history-writer, :meth:`HistoryStore.insert` or :meth:`HistoryStore.write_keys`) are
    found. ``without`` names top-level fields left out of the items (a list needs no
    timeline: less to encode and decode).
    """
    if {"_id", "created_at", "user_id", "direction"} & set(without):
        raise ValueError("_id, created_at, user_id and direction are needed to check items")
    projection = {name: 0 for name in without} or None
    validate_account_id(account_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return Page(items=[], next_cursor=None)
    position = None if cursor is None else _decode_cursor(cursor)
    if position is not None and position.newest_first != newest_first:
        raise InvalidCursor("it belongs to a query in the other order")

    first, last = start.date(), (end - _MS).date()
    if position is not None:
        # Days beyond the cursor's have been read completely already.
        here = position.created_at.date()
        first, last = (first, min(last, here)) if newest_first else (max(first, here), last)
    days = _days(first, last, newest_first)
    names = {history_keys_collection_name(account_id, _month_of(d)) for d in days}
    # Reading a day of a missing collection costs no more than listing collections: only
    # a long range is worth skipping its empty months.
    existing = await _existing(db, sorted(names)) if len(names) > 2 else names

    wanted = limit + 1
    items: list[Doc] = []
    for day in days:
        month = _month_of(day)
        keys_name = history_keys_collection_name(account_id, month)
        if keys_name not in existing:
            continue
        day_id = _day_id(day)
        if user_id is None and direction is None:
            keys, owned = await db[keys_name].find_one({"_id": day_id}), None
        else:
            keys, owned = await asyncio.gather(
                db[keys_name].find_one({"_id": day_id}),
                db[keys_name].find_one({"_id": day_id + _OWNERS}),
            )
        if keys is None:
            continue
        candidates = _candidates(keys, owned or {}, start, end, position, user_id, direction)
        candidates.sort(key=lambda c: (c.created_at, c.fax_id), reverse=newest_first)
        history = db[history_collection_name(account_id, month)]
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

    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    items = items[:limit]
    last_item = items[-1]
    return Page(
        items=items,
        next_cursor=encode_cursor(
            last_item["created_at"], last_item["_id"], newest_first=newest_first
        ),
    )


def _month_of(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


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
        # Day key entries this process wrote: (keys collection, fax id) -> (time, owner,
        # direction). Most events of a fax tell the keys nothing new (a later time, the
        # same owner); skipping them saves rewriting a day document of every fax of the
        # day. Forgotten with the month in drop_month, like _indexed.
        self._keyed: OrderedDict[tuple[str, str], tuple[datetime, str | None, str | None]] = (
            OrderedDict()
        )

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
        await self.write_keys(account_id, month, [_entry_of(doc)])
        return coll.name

    async def insert_many(self, account_id: str, docs: Sequence[Mapping[str, Any]]) -> None:
        """Insert complete history documents (imports, seeding) with their day keys."""
        by_month: dict[str, list[Doc]] = {}
        for doc in docs:
            created_at = doc.get("created_at")
            if not isinstance(created_at, datetime) or not isinstance(doc.get("_id"), str):
                raise ValueError("a history document needs a str _id and a datetime created_at")
            by_month.setdefault(month_key(created_at), []).append(dict(doc))
        for month, group in sorted(by_month.items()):
            await self.ensure_history_indexes(account_id, month)
            coll = self.collection(account_id, month)
            for start in range(0, len(group), 1000):
                await coll.insert_many(group[start : start + 1000], ordered=False)
            await self.write_keys(account_id, month, [_entry_of(d) for d in group])

    def keys_collection(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        return self.db[history_keys_collection_name(account_id, month)]

    async def write_keys(
        self, account_id: str, month: MonthLike, entries: Iterable[KeyEntry]
    ) -> None:
        """Record faxes of one account-month in its day keys (idempotent)."""
        name = history_keys_collection_name(account_id, month)
        fresh = [e for e in entries if not self._known(name, e)]
        if not fresh:
            return
        await run_upserts(self.db[name], key_updates(fresh))
        for entry in fresh:
            self._remember(name, entry)

    def _known(self, name: str, entry: KeyEntry) -> bool:
        written = self._keyed.get((name, entry.fax_id))
        if written is None:
            return False
        at, user_id, direction = written
        return (
            _to_ms(entry.created_at) >= _to_ms(at)
            and entry.user_id in (None, user_id)
            and entry.direction in (None, direction)
        )

    def _remember(self, name: str, entry: KeyEntry) -> None:
        key = (name, entry.fax_id)
        written = self._keyed.pop(key, None)
        if written is None:
            self._keyed[key] = (entry.created_at, entry.user_id, entry.direction)
        else:
            at, user_id, direction = written
            self._keyed[key] = (
                min(at, entry.created_at, key=_to_ms),
                entry.user_id or user_id,
                entry.direction or direction,
            )
        while len(self._keyed) > _KEYED_MAX:
            self._keyed.popitem(last=False)

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
        return await query_keys(
            self.db,
            account_id,
            start,
            end,
            user_id=user_id,
            direction=direction,
            limit=limit,
            cursor=cursor,
            newest_first=newest_first,
            without=without,
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
        """Drop a whole month of history and its day keys (retention). Idempotent."""
        name = history_collection_name(account_id, month)
        await self.db.drop_collection(name)
        self._indexed.discard(name)
        keys = history_keys_collection_name(account_id, month)
        await self.db.drop_collection(keys)
        for key in [k for k in self._keyed if k[0] == keys]:
            del self._keyed[key]


def _entry_of(doc: Mapping[str, Any]) -> KeyEntry:
    return KeyEntry(
        fax_id=doc["_id"],
        created_at=doc["created_at"],
        user_id=doc.get("user_id"),
        direction=doc.get("direction"),
    )
