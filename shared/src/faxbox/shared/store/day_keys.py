"""The day keys: which faxes of an account-month were created on each UTC day, and when.

FerretDB v1 (SQLite backend) evaluates every filter but ``_id`` equality, and every
sort, in Go over all documents of the collection, so a range query over a month's
history decodes the whole month per page (1.7 s for 8,500 faxes). Next to each month's
history collection the history-writer therefore keeps ``fax_keys_<account>_<YYYYMM>``:
per UTC day, a document ``YYYYMMDD`` mapping each fax created that day to its
``created_at``, and a document ``YYYYMMDD-owners`` with its owner and direction::

    {"_id": "20261127", "t": {"fax_01J...": <created_at>, ...}}
    {"_id": "20261127-owners", "u": {"fax_01J...": "usr_..."}, "d": {"fax_01J...": "inbound"}}

Field names are the fax ids percent-encoded, so ``.`` and ``$`` cannot occur. Owners
and directions live in the second document because an account's listing needs only the
times, and FerretDB decodes a whole document to read it (274 faxes a day: 6.4 ms for one
document of times, owners and directions, 2.4 ms for the times alone).

This module is the schema both sides agree on: the writer (``faxbox.history``) builds
its upserts from it, the reader (:meth:`HistoryStore.query_keys
<faxbox.shared.store.history.HistoryStore.query_keys>`) parses the documents with it.
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import unquote

from faxbox.shared.store.monthly import from_ms, to_ms

TIMES = "t"
OWNERS = "u"
DIRECTIONS = "d"
_OWNERS_SUFFIX = "-owners"


def day_id(day: date) -> str:
    """``YYYYMMDD``: the ``_id`` of a day's times document."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def owners_id(day: date) -> str:
    """``YYYYMMDD-owners``: the ``_id`` of a day's owners and directions document."""
    return day_id(day) + _OWNERS_SUFFIX


def field_of(fax_id: str) -> str:
    """The field name standing for ``fax_id`` in a day key document."""
    if not fax_id:
        raise ValueError("a fax id must not be empty")
    # No "." (a path) nor "$" (an operator); "%" escaped first, so unquote() reverses it
    # exactly.
    return fax_id.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def fax_id_of(field: str) -> str:
    """The fax id a field name stands for (the inverse of :func:`field_of`)."""
    return unquote(field)


def stored_time(at: datetime) -> datetime:
    """``at`` as the database keeps it: UTC, to the millisecond (its day is this one's)."""
    return from_ms(to_ms(at))
