"""Names of the per-account, per-month collections and GridFS buckets.

Fax history and fax documents are partitioned by account and by the UTC month of the
fax's creation (``YYYYMM``), so retention is a cheap ``drop`` of whole collections
instead of a mass delete (FerretDB v1 has no TTL indexes anyway).

Name limits that shaped this module:

* FerretDB v1.24 accepts collection names matching ``^[^.$\\x00][^$\\x00]{0,234}$``
  (at most 235 characters, no ``$``, no leading ``.``, no ``_ferretdb_`` prefix);
  its SQLite backend also lower-cases the name to build a table name.
* MongoDB limits the namespace ``<db>.<collection>`` to 255 bytes.

Account ids are therefore restricted to ``[a-z0-9_-]``, start with a letter or digit
and are at most :data:`MAX_ACCOUNT_ID_LENGTH` characters, so the longest name built
here (``documents_<id>_<YYYYMM>.chunks``, 88 characters) stays far inside both limits
even with a 63-character database name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

MAX_ACCOUNT_ID_LENGTH = 64

_ACCOUNT_ID_RE = re.compile(rf"^[a-z0-9][a-z0-9_-]{{0,{MAX_ACCOUNT_ID_LENGTH - 1}}}$")
_MONTH_RE = re.compile(r"^(\d{4})(\d{2})$")

HISTORY_PREFIX = "fax_history_"
HISTORY_KEYS_PREFIX = "fax_keys_"
DOCUMENTS_PREFIX = "documents_"

MonthLike: TypeAlias = str | datetime
"""A month as ``"YYYYMM"`` or as any instant inside it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def validate_account_id(account_id: str) -> str:
    """Return ``account_id`` if it is safe inside collection names, else raise ValueError."""
    if not _ACCOUNT_ID_RE.match(account_id):
        raise ValueError(
            f"invalid account id {account_id!r}: use 1-{MAX_ACCOUNT_ID_LENGTH} characters "
            "from [a-z0-9_-], starting with a letter or digit"
        )
    return account_id


def as_utc(dt: datetime) -> datetime:
    """Convert to an aware UTC datetime.

    A naive datetime is taken to be UTC already: that is what PyMongo returns from a
    client without ``tz_aware`` and what BSON stores, so it is the only safe reading.
    """
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def to_ms(dt: datetime) -> int:
    """Integer milliseconds since the epoch: exactly what BSON stores of a datetime.

    (A float timestamp could be off by one in the last digit, and equality with the
    stored value would fail.)
    """
    return (as_utc(dt) - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of ``ms`` milliseconds since the epoch (OverflowError if
    out of range)."""
    return _EPOCH + ms * _MS


def month_key(dt: datetime) -> str:
    """``YYYYMM`` of the UTC month containing ``dt``."""
    utc = as_utc(dt)
    return f"{utc.year:04d}{utc.month:02d}"


def parse_month(month: MonthLike) -> str:
    """Validate a month given as ``YYYYMM`` (or convert an instant) and return ``YYYYMM``."""
    if isinstance(month, datetime):
        return month_key(month)
    m = _MONTH_RE.match(month)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise ValueError(f"invalid month {month!r}: expected YYYYMM, e.g. 202501")
    return month


def month_start(month: MonthLike) -> datetime:
    """The first instant (UTC) of a month."""
    key = parse_month(month)
    return datetime(int(key[:4]), int(key[4:]), 1, tzinfo=UTC)


def next_month(month: MonthLike) -> str:
    """The month after ``month``, as ``YYYYMM``."""
    key = parse_month(month)
    year, mon = int(key[:4]), int(key[4:])
    return f"{year + 1:04d}01" if mon == 12 else f"{year:04d}{mon + 1:02d}"


def months_between(start: MonthLike, end: MonthLike) -> list[str]:
    """Every month from ``start``'s to ``end``'s, both included, oldest first.

    Empty if ``end`` is in an earlier month than ``start``.
    """
    first, last = parse_month(start), parse_month(end)
    months: list[str] = []
    current = first
    # YYYYMM strings of the same width compare like the months they name.
    while current <= last:
        months.append(current)
        current = next_month(current)
    return months


def history_collection_name(account_id: str, month: MonthLike) -> str:
    """``fax_history_<account_id>_<YYYYMM>``."""
    return f"{HISTORY_PREFIX}{validate_account_id(account_id)}_{parse_month(month)}"


def history_keys_collection_name(account_id: str, month: MonthLike) -> str:
    """``fax_keys_<account_id>_<YYYYMM>``: the month's day key documents (see history)."""
    return f"{HISTORY_KEYS_PREFIX}{validate_account_id(account_id)}_{parse_month(month)}"


def document_bucket_name(account_id: str, month: MonthLike) -> str:
    """``documents_<account_id>_<YYYYMM>``: a GridFS bucket (``.files`` and ``.chunks``)."""
    return f"{DOCUMENTS_PREFIX}{validate_account_id(account_id)}_{parse_month(month)}"
