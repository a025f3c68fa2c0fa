"""Retention: dropping a month removes that month's faxes and documents, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest

from faxbox.history.writes import HistoryWrites
from faxbox.shared.contracts import DocumentRef
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import Account, NotFound, Store, apply_retention, drop_month, stored_months

pytestmark = pytest.mark.integration

MONTHS = ("202610", "202611", "202612")


async def fill(store: Store, account_id: str) -> dict[str, DocumentRef]:
    """A history document and a stored document in each of three months."""
    writes = HistoryWrites(store.history)
    refs = {}
    for month in MONTHS:
        created = datetime(int(month[:4]), int(month[4:]), 15, tzinfo=UTC)
        await writes.insert(account_id, {"_id": f"fax_{month}", "created_at": created})
        refs[month] = await store.documents.put(
            account_id,
            month,
            f"pages of {month}".encode(),
            filename="f.pdf",
            content_type="application/pdf",
        )
    return refs


async def assert_month_intact(store: Store, account_id: str, month: str, ref: DocumentRef) -> None:
    doc = await store.history.collection(account_id, month).find_one({"_id": f"fax_{month}"})
    assert doc is not None, f"{account_id}/{month} history is gone"
    assert await store.documents.get(ref) == f"pages of {month}".encode()


async def assert_month_gone(store: Store, account_id: str, month: str, ref: DocumentRef) -> None:
    assert await store.history.collection(account_id, month).count_documents({}) == 0
    with pytest.raises(NotFound):
        await store.documents.get(ref)


def accounts() -> tuple[str, str]:
    # The second id extends the first: a careless prefix match would hit both.
    base = f"ret{uuid.uuid4().hex[:6]}"
    return base, f"{base}_b"


async def test_drop_month_leaves_the_neighbours_intact(store: Store) -> None:
    account, other = accounts()
    refs = await fill(store, account)
    other_refs = await fill(store, other)

    await drop_month(store, account, "202611")
    await drop_month(store, account, "202611")  # idempotent

    await assert_month_gone(store, account, "202611", refs["202611"])
    for month in ("202610", "202612"):
        await assert_month_intact(store, account, month, refs[month])
    for month in MONTHS:
        await assert_month_intact(store, other, month, other_refs[month])
    assert await stored_months(store, account) == ["202610", "202612"]
    assert await stored_months(store, other) == list(MONTHS)
    names = await store.db.list_collection_names()
    assert not [n for n in names if n.endswith(f"{account}_202611") or f"{account}_202611." in n]


async def test_apply_retention_keeps_the_newest_months_of_accounts_with_a_policy(
    store: Store,
) -> None:
    keep = await store.create_account(
        Account(
            id=f"k{uuid.uuid4().hex[:6]}",
            name="keeps two",
            realm=f"{uuid.uuid4().hex}.test",
            months_to_keep=2,
        )
    )
    forever = await store.create_account(
        Account(id=f"f{uuid.uuid4().hex[:6]}", name="forever", realm=f"{uuid.uuid4().hex}.test")
    )
    refs = await fill(store, keep.id)
    forever_refs = await fill(store, forever.id)

    dropped = await apply_retention(store, now=datetime(2026, 12, 31, 23, 59, tzinfo=UTC))

    assert (keep.id, "202610") in dropped
    assert all(account != forever.id for account, _ in dropped)
    await assert_month_gone(store, keep.id, "202610", refs["202610"])
    for month in ("202611", "202612"):
        await assert_month_intact(store, keep.id, month, refs[month])
    for month in MONTHS:
        await assert_month_intact(store, forever.id, month, forever_refs[month])


def cli(settings: MongoSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "FAXBOX_MONGO_URL": settings.mongo_url,
        "FAXBOX_MONGO_DB": settings.mongo_db,
    }
    return subprocess.run(
        [sys.executable, "-m", "faxbox.admin", "--json", "history", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_drops_one_month(store: Store, mongo_settings: MongoSettings) -> None:
    account, other = accounts()
    refs = await fill(store, account)
    other_refs = await fill(store, other)

    result = cli(mongo_settings, "drop-month", "--account", account, "--month", "202612")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"dropped": [{"account": account, "month": "202612"}]}
    await assert_month_gone(store, account, "202612", refs["202612"])
    await assert_month_intact(store, account, "202611", refs["202611"])
    await assert_month_intact(store, other, "202612", other_refs["202612"])


@pytest.mark.parametrize(
    ("account", "month", "fragment"),
    [("Bad.Id", "202611", "invalid account id"), ("acc1", "202613", "invalid month")],
)
def test_the_cli_refuses_bad_input_in_one_line(
    mongo_settings: MongoSettings, account: str, month: str, fragment: str
) -> None:
    result = cli(mongo_settings, "drop-month", "--account", account, "--month", month)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1


async def test_the_cli_applies_retention(store: Store, mongo_settings: MongoSettings) -> None:
    writes = HistoryWrites(store.history)
    account = await store.create_account(
        Account(
            id=f"c{uuid.uuid4().hex[:6]}",
            name="one",
            realm=f"{uuid.uuid4().hex}.test",
            months_to_keep=1,
        )
    )
    await writes.insert(account.id, {"_id": "old", "created_at": datetime(2020, 1, 5, tzinfo=UTC)})
    result = cli(mongo_settings, "apply-retention", "--account", account.id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"dropped": [{"account": account.id, "month": "202001"}]}
    assert await stored_months(store, account.id) == []
