"""Retention: dropping whole account-months of fax history and documents.

A month is the history collection ``fax_history_<account>_<YYYYMM>``, its day keys
``fax_keys_<account>_<YYYYMM>`` and the GridFS bucket ``documents_<account>_<YYYYMM>``
(``.files`` and ``.chunks``); dropping it touches nothing else, so neighbouring months
and other accounts are never affected.

``months_to_keep = N`` on an account keeps the current UTC month and the N-1 before it.
Dropping is idempotent, so several processes applying the policy at once is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from faxbox.shared.store.models import utc_now
from faxbox.shared.store.monthly import (
    DOCUMENTS_PREFIX,
    HISTORY_KEYS_PREFIX,
    HISTORY_PREFIX,
    MonthLike,
    month_key,
    parse_month,
    validate_account_id,
)
from faxbox.shared.store.store import Store


async def drop_month(store: Store, account_id: str, month: MonthLike) -> None:
    """Drop one account-month: its history collection, day keys and document bucket."""
    validate_account_id(account_id)
    month = parse_month(month)
    await store.history.drop_month(account_id, month)
    await store.documents.delete_month(account_id, month)


async def stored_months(store: Store, account_id: str) -> list[str]:
    """Months (oldest first) that have a history collection, day keys or a document bucket."""
    account_id = validate_account_id(account_id)
    history_prefixes = (f"{HISTORY_PREFIX}{account_id}_", f"{HISTORY_KEYS_PREFIX}{account_id}_")
    documents_prefix = f"{DOCUMENTS_PREFIX}{account_id}_"
    found: set[str] = set()
    for name in await store.db.list_collection_names():
        suffix: str | None = None
        history = [name.removeprefix(p) for p in history_prefixes if name.startswith(p)]
        if history:
            suffix = history[0]
        elif name.startswith(documents_prefix):
            rest = name.removeprefix(documents_prefix)
            for part in (".files", ".chunks"):
                if rest.endswith(part):
                    suffix = rest.removesuffix(part)
        # An exact 6-digit suffix: account "a" must not pick up account "a_b"'s months.
        if suffix is not None and len(suffix) == 6 and suffix.isdigit():
            found.add(parse_month(suffix))
    return sorted(found)


def first_month_kept(months_to_keep: int, now: datetime) -> str:
    """The oldest month a policy of ``months_to_keep`` keeps, counted back from ``now``."""
    if months_to_keep < 1:
        raise ValueError("months_to_keep must be at least 1")
    current = month_key(now)
    index = int(current[:4]) * 12 + int(current[4:]) - 1 - (months_to_keep - 1)
    return f"{index // 12:04d}{index % 12 + 1:02d}"


def expired_months(months: Iterable[str], months_to_keep: int, now: datetime) -> list[str]:
    oldest_kept = first_month_kept(months_to_keep, now)
    # YYYYMM strings of the same width compare like the months they name.
    return sorted(m for m in months if parse_month(m) < oldest_kept)


async def apply_retention(
    store: Store, *, now: datetime | None = None, account_id: str | None = None
) -> list[tuple[str, str]]:
    """Drop every expired month of every account with a policy (or of one account).

    Returns the ``(account_id, month)`` pairs dropped.
    """
    now = now or utc_now()
    accounts = (
        [await store.get_account(account_id)]
        if account_id is not None
        else await store.list_accounts()
    )
    dropped: list[tuple[str, str]] = []
    for account in accounts:
        if account.months_to_keep is None:
            continue
        for month in expired_months(
            await stored_months(store, account.id), account.months_to_keep, now
        ):
            await drop_month(store, account.id, month)
            dropped.append((account.id, month))
    return dropped
