"""Pages of fax history and the opaque cursor that leads from one page to the next.

Order is total, ``(created_at, _id)``: faxes created in the same millisecond are
ordered by id. The cursor holds the last ``(created_at, _id)`` returned and the next page
asks for what lies strictly beyond it, so pages never repeat or skip items, even across
month boundaries or runs of equal timestamps.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from faxbox.shared.store.errors import InvalidCursor
from faxbox.shared.store.monthly import from_ms, to_ms

MAX_PAGE_SIZE = 1000
_CURSOR_VERSION = 1


class Page(BaseModel):
    """One page of history, plus the cursor of the next page (None on the last one)."""

    model_config = ConfigDict(frozen=True)

    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a cursor points: just after the item ``(created_at, id)``."""

    created_at: datetime
    id: str
    newest_first: bool


def encode_cursor(created_at: datetime, doc_id: str, *, newest_first: bool = True) -> str:
    """The opaque cursor meaning "after the item (created_at, doc_id)"."""
    payload = {"v": _CURSOR_VERSION, "t": to_ms(created_at), "i": doc_id, "n": newest_first}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
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
        created_at = from_ms(t)
    except OverflowError:
        raise InvalidCursor("time out of range") from None
    return Position(created_at, doc_id, newest_first)


def start_position(cursor: str | None, *, newest_first: bool) -> Position | None:
    """The position a query resumes from (None: the first page), checked against its order."""
    position = None if cursor is None else decode_cursor(cursor)
    if position is not None and position.newest_first != newest_first:
        raise InvalidCursor("it belongs to a query in the other order")
    return position


def page_of(items: list[dict[str, Any]], limit: int, *, newest_first: bool) -> Page:
    """The page of ``limit`` items from up to ``limit + 1`` found (one more tells that a
    next page exists without another query)."""
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    items = items[:limit]
    last = items[-1]
    return Page(
        items=items,
        next_cursor=encode_cursor(last["created_at"], last["_id"], newest_first=newest_first),
    )
