"""Writing history documents into their month: the month's index, the day keys.

The read side (pages, day key listings, months, retention) is
:class:`faxbox.shared.store.HistoryStore`; this is the writer's side of the same
collections, with what it remembers of its own writes so the steady state costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from faxbox.history.day_keys import KeyEntry, entry_of, key_updates
from faxbox.history.upserts import run_upserts
from faxbox.shared.store import HistoryStore
from faxbox.shared.store.monthly import MonthLike, month_key, to_ms

Doc = dict[str, Any]

_KEYED_MAX = 200_000


class HistoryWrites:
    """Writes history documents and day keys, creating each month's index once.

    The per-month index on ``(created_at, _id)`` is created when a month collection is
    first written by this process, and remembered; so are the day key entries written.
    Both are forgotten when ``history.drop_month`` drops the month (retention runs in the
    history-writer's process); another process dropping a month is not noticed.
    """

    def __init__(self, history: HistoryStore) -> None:
        self.history = history
        self._indexed: set[str] = set()
        # Day key entries this process wrote: (keys collection, fax id) -> (time, owner,
        # direction). Most events of a fax tell the keys nothing new (a later time, the
        # same owner); skipping them saves rewriting a day document of every fax of the
        # day.
        self._keyed: OrderedDict[tuple[str, str], tuple[datetime, str | None, str | None]] = (
            OrderedDict()
        )
        history.add_month_cache(self)

    def collection(self, account_id: str, month: MonthLike) -> AsyncCollection[Doc]:
        return self.history.collection(account_id, month)

    async def ensure_history_indexes(self, account_id: str, month: MonthLike) -> None:
        collection = self.collection(account_id, month)
        if collection.name in self._indexed:
            return
        await collection.create_indexes(
            [IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_at_id")]
        )
        self._indexed.add(collection.name)

    async def insert(self, account_id: str, doc: Mapping[str, Any]) -> str:
        """Insert ``doc`` into the collection of its ``created_at`` month; return its name."""
        month = _month_of(doc)
        await self.ensure_history_indexes(account_id, month)
        collection = self.collection(account_id, month)
        await collection.insert_one(dict(doc))
        await self.write_keys(account_id, month, [entry_of(doc)])
        return collection.name

    async def insert_many(self, account_id: str, docs: Sequence[Mapping[str, Any]]) -> None:
        """Insert complete history documents (imports, seeding) with their day keys."""
        by_month: dict[str, list[Doc]] = {}
        for doc in docs:
            by_month.setdefault(_month_of(doc), []).append(dict(doc))
        for month, group in sorted(by_month.items()):
            await self.ensure_history_indexes(account_id, month)
            collection = self.collection(account_id, month)
            for start in range(0, len(group), 1000):
                await collection.insert_many(group[start : start + 1000], ordered=False)
            await self.write_keys(account_id, month, [entry_of(d) for d in group])

    async def write_keys(
        self, account_id: str, month: MonthLike, entries: Iterable[KeyEntry]
    ) -> None:
        """Record faxes of one account-month in its day keys (idempotent)."""
        collection = self.history.keys_collection(account_id, month)
        fresh = [e for e in entries if not self._known(collection.name, e)]
        if not fresh:
            return
        await run_upserts(collection, key_updates(fresh))
        for entry in fresh:
            self._remember(collection.name, entry)

    def forget_month(self, account_id: str, month: str) -> None:
        self._indexed.discard(self.collection(account_id, month).name)
        keys = self.history.keys_collection(account_id, month).name
        for key in [k for k in self._keyed if k[0] == keys]:
            del self._keyed[key]

    def _known(self, name: str, entry: KeyEntry) -> bool:
        written = self._keyed.get((name, entry.fax_id))
        if written is None:
            return False
        at, user_id, direction = written
        return (
            to_ms(entry.created_at) >= to_ms(at)
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
                min(at, entry.created_at, key=to_ms),
                entry.user_id or user_id,
                entry.direction or direction,
            )
        while len(self._keyed) > _KEYED_MAX:
            self._keyed.popitem(last=False)


def _month_of(doc: Mapping[str, Any]) -> str:
    created_at = doc.get("created_at")
    if not isinstance(created_at, datetime) or not isinstance(doc.get("_id"), str):
        raise ValueError("a history document needs a str _id and a datetime created_at")
    return month_key(created_at)
