"""The day keys' upserts: what the history-writer tells a month's day key documents.

The documents' schema (ids, field names, stored times) is
:mod:`faxbox.shared.store.day_keys`, which the portal's listing reads with. They are
written like the history itself: ``$min`` of the time, ``$set`` of facts, so any order
and any repeat of the writes give the same documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from faxbox.shared.store import day_keys

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What a write tells the day keys about one fax (owner/direction if it knows)."""

    fax_id: str
    created_at: datetime
    user_id: str | None = None
    direction: str | None = None


def entry_of(doc: Mapping[str, Any]) -> KeyEntry:
    """The day key entry of a complete history document."""
    return KeyEntry(
        fax_id=doc["_id"],
        created_at=doc["created_at"],
        user_id=doc.get("user_id"),
        direction=doc.get("direction"),
    )


def key_updates(entries: Iterable[KeyEntry]) -> list[Doc]:
    """``update`` statements (``_id`` upserts, two per day) recording ``entries``.

    All entries must belong to one account-month collection (their ``created_at`` in
    that month, as history documents' always are).
    """
    by_day: dict[date, dict[str, Doc]] = {}
    for entry in entries:
        at = day_keys.stored_time(entry.created_at)
        ops = by_day.setdefault(at.date(), {"$min": {}, "$set": {}})
        field = day_keys.field_of(entry.fax_id)
        time_path = f"{day_keys.TIMES}.{field}"
        earlier = ops["$min"].get(time_path)
        ops["$min"][time_path] = at if earlier is None else min(earlier, at)
        if entry.user_id is not None:
            ops["$set"][f"{day_keys.OWNERS}.{field}"] = entry.user_id
        if entry.direction is not None:
            ops["$set"][f"{day_keys.DIRECTIONS}.{field}"] = entry.direction
    updates = []
    for day, ops in sorted(by_day.items()):
        times, owners = day_keys.day_id(day), day_keys.owners_id(day)
        updates.append({"q": {"_id": times}, "u": {"$min": ops["$min"]}, "upsert": True})
        if ops["$set"]:
            updates.append({"q": {"_id": owners}, "u": {"$set": ops["$set"]}, "upsert": True})
    return updates
