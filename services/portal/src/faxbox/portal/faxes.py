"""Reading fax history and documents on behalf of a principal (pages and API alike)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from faxbox.portal.access import account_in_scope, history_filter
from faxbox.portal.security import Principal
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.store import NotFound, Store
from faxbox.shared.store.monthly import history_collection_name, parse_month
from faxbox.shared.store.records import HistoryRecord

DEFAULT_RANGE = timedelta(days=30)
MAX_PAGE = 200
# What a list does not show (get_fax reads the whole document).
NOT_LISTED = ("timeline", "notifications", "statistics")

# What a download kind means, in order of preference among the stored documents.
DOCUMENT_KINDS: dict[str, tuple[str, ...]] = {
    "pdf": ("pdf", "partial_pdf"),
    "tiff": ("tiff", "transmitted_tiff", "fax_tiff"),
    "original": ("original",),
}

Direction = Literal["outbound", "inbound"]


@dataclass(frozen=True, slots=True)
class DateRange:
    start: datetime
    end: datetime  # exclusive

    @classmethod
    def resolve(
        cls, start: datetime | None, end: datetime | None, *, now: datetime | None = None
    ) -> DateRange:
        """Fill in the defaults: the 30 days up to now (or up to ``end``)."""
        end = _utc(end) if end is not None else (now or datetime.now(UTC))
        start = _utc(start) if start is not None else end - DEFAULT_RANGE
        if end <= start:
            raise ValueError("the end of the date range must be after its start")
        return cls(start, end)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def number_filter(search: str) -> dict[str, Any] | None:
    """Faxes whose remote or local number contains the digits typed (``+`` ignored)."""
    digits = re.sub(r"[^0-9*#]", "", search)
    if not digits:
        return None
    pattern = re.escape(digits)
    return {
        "$or": [
            {"remote_number": {"$regex": pattern}},
            {"local_number": {"$regex": pattern}},
        ]
    }


@dataclass(frozen=True, slots=True)
class FaxList:
    items: list[HistoryRecord]
    next_cursor: str | None
    range: DateRange


async def list_faxes(
    store: Store,
    principal: Principal,
    account_id: str,
    date_range: DateRange,
    *,
    number: str | None = None,
    direction: Direction | None = None,
    user_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> FaxList:
    """A page of the faxes the principal may see, newest first.

    Without a number search the page comes from the history's day keys (reads by
    ``_id`` only: fast on FerretDB v1 too). A number search is a substring match on
    the documents themselves, so it runs the range query, which on FerretDB v1 decodes
    every document of each month it reads. Items lack the fields in NOT_LISTED.
    """
    await account_in_scope(store, principal, account_id)
    scope = history_filter(principal, account_id)
    owners = {o for o in (scope.get("user_id"), user_id) if o}
    limit = max(1, min(limit, MAX_PAGE))
    by_number = number_filter(number) if number else None
    if by_number is None:
        if len(owners) > 1:  # a user asking for someone else's faxes: none visible
            return FaxList(items=[], next_cursor=None, range=date_range)
        page = await store.history.query_keys(
            account_id,
            date_range.start,
            date_range.end,
            user_id=next(iter(owners), None),
            direction=direction,
            limit=limit,
            cursor=cursor,
            without=NOT_LISTED,
        )
    else:
        conditions: list[dict[str, Any]] = [{"user_id": o} for o in sorted(owners)]
        if direction:
            conditions.append({"direction": direction})
        conditions.append(by_number)
        page = await store.history.query_range(
            account_id,
            date_range.start,
            date_range.end,
            filter=conditions[0] if len(conditions) == 1 else {"$and": conditions},
            limit=limit,
            cursor=cursor,
        )
    return FaxList(
        items=[HistoryRecord.from_doc(doc) for doc in page.items],
        next_cursor=page.next_cursor,
        range=date_range,
    )


async def get_fax(
    store: Store, principal: Principal, account_id: str, month: str, fax_id: str
) -> HistoryRecord:
    """One fax the principal may see; NotFound for anything else."""
    await account_in_scope(store, principal, account_id)
    try:
        name = history_collection_name(account_id, parse_month(month))
    except ValueError:
        raise NotFound("fax", fax_id) from None
    query: dict[str, Any] = {"_id": fax_id, **history_filter(principal, account_id)}
    doc = await store.db[name].find_one(query)
    if doc is None:
        raise NotFound("fax", fax_id)
    try:
        return HistoryRecord.from_doc(doc)
    except ValidationError:
        raise NotFound("fax", fax_id) from None


def document_ref(record: HistoryRecord, kind: str) -> DocumentRef:
    for key in DOCUMENT_KINDS.get(kind, ()):
        ref = record.documents.get(key)
        # The ref must point into the fax's own account: a history document is trusted
        # data, but a download is the one place bytes leave, so check anyway.
        if ref is not None and ref.account_id == record.account_id:
            return ref
    raise NotFound("document", f"{record.id}/{kind}")


def available_kinds(record: HistoryRecord) -> list[str]:
    return [
        kind for kind, keys in DOCUMENT_KINDS.items() if any(k in record.documents for k in keys)
    ]


async def open_document(store: Store, ref: DocumentRef) -> AsyncIterator[bytes]:
    """The document's chunks; the first is read here so a missing file is NotFound now,
    before a response has started."""
    stream = store.documents.stream(ref)
    first = await anext(stream, b"")

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return chunks()
