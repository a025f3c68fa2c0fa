"""The store against the real MongoDB-wire server (FerretDB v1 locally, MongoDB in compose)."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure

from faxbox.history.writes import HistoryWrites
from faxbox.shared.store import (
    Account,
    Carrier,
    DocumentCorrupt,
    DuplicateCarrier,
    DuplicateEmail,
    DuplicateRealm,
    Faxbox,
    InvalidCursor,
    NotFound,
    NumberAlreadyAssigned,
    Role,
    Store,
    StoreError,
    User,
)
from faxbox.shared.store.documents import CHUNK_SIZE
from faxbox.shared.store.monthly import document_bucket_name, history_collection_name

pytestmark = pytest.mark.integration


async def new_account(store: Store, realm: str | None = None) -> Account:
    return await store.create_account(
        Account(name="Acme", realm=realm or f"{uuid.uuid4().hex[:8]}.example.com")
    )


async def new_faxbox(store: Store, account: Account) -> Faxbox:
    owner = await store.create_user(
        User(account_id=account.id, email=f"{uuid.uuid4().hex[:8]}@example.com")
    )
    return await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=owner.id))


# --- accounts, users ----------------------------------------------------------------------


async def test_indexes_are_idempotent(store: Store) -> None:
    await store.ensure_indexes()
    await store.ensure_indexes()
    names = {ix["name"] async for ix in await store.accounts.list_indexes()}
    assert "realm_unique" in names


async def test_realm_is_unique_and_lower_cased(store: Store) -> None:
    first = await new_account(store, "Fax.Example.COM")
    assert first.realm == "fax.example.com"
    with pytest.raises(DuplicateRealm, match=r"fax\.example\.com"):
        await store.create_account(Account(name="Other", realm="fax.example.com"))
    found = await store.get_account_by_realm("FAX.example.com")
    assert found == first
    assert [a.id for a in await store.list_accounts() if a.realm == "fax.example.com"] == [first.id]
    with pytest.raises(NotFound):
        await store.get_account_by_realm("nobody.example.com")


async def test_email_is_unique_case_insensitively(store: Store) -> None:
    account = await new_account(store)
    alice = await store.create_user(
        User(account_id=account.id, email="Alice.Smith@Example.com", role=Role.ACCOUNT_ADMIN)
    )
    with pytest.raises(DuplicateEmail, match=re.escape("alice.smith@EXAMPLE.com")):
        await store.create_user(User(account_id=account.id, email="alice.smith@EXAMPLE.com"))
    found = await store.find_user_by_email("ALICE.SMITH@example.COM")
    assert found == alice
    assert found.email == "Alice.Smith@Example.com"  # the original spelling is kept
    assert found.role is Role.ACCOUNT_ADMIN
    assert await store.find_user_by_email("bob@example.com") is None
    raw = await store.users.find_one({"_id": alice.id})
    assert raw is not None
    assert raw["email_lower"] == "alice.smith@example.com"


async def test_user_needs_an_existing_account(store: Store) -> None:
    with pytest.raises(NotFound, match="account"):
        await store.create_user(User(account_id="acc_missing", email="x@example.com"))


# --- faxboxes and numbers -----------------------------------------------------------------


async def test_number_is_unique_across_faxboxes(store: Store) -> None:
    account = await new_account(store)
    first = await new_faxbox(store, account)
    second = await new_faxbox(store, account)

    await store.add_account_number(account.id, "+4930123456")
    await store.assign_number(first.id, "+4930123456")
    with pytest.raises(NumberAlreadyAssigned, match=first.id) as info:
        await store.assign_number(second.id, "+4930123456")
    assert info.value.faxbox_id == first.id
    assert (await store.get_faxbox(second.id)).numbers == []  # unchanged
    assert (await store.get_faxbox(first.id)).numbers == ["+4930123456"]

    # Again to the same faxbox: a no-op, not a duplicate.
    await store.assign_number(first.id, "+4930123456")
    assert (await store.get_faxbox(first.id)).numbers == ["+4930123456"]

    routed = await store.faxbox_for_number("+4930123456")
    assert routed is not None
    assert routed[0].id == first.id
    assert routed[1] == account

    with pytest.raises(NumberAlreadyAssigned):
        await store.unassign_number("+4930123456", faxbox_id=second.id)
    await store.unassign_number("+4930123456")
    assert await store.faxbox_for_number("+4930123456") is None
    assert (await store.get_faxbox(first.id)).numbers == []

    await store.assign_number(second.id, "+4930123456")
    assert (await store.get_faxbox(second.id)).numbers == ["+4930123456"]


async def test_assign_to_missing_faxbox_leaves_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.assign_number("fbx_missing", "+4930999999")
    assert await store.find_number("+4930999999") is None


class _FailingUpdates:
    """A faxboxes collection whose updates fail, as if the connection dropped."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionFailure("simulated failure")


class _FlakyStore(Store):
    @property
    def faxboxes(self) -> Any:
        return _FailingUpdates(self.db["faxboxes"])


async def test_failed_mirror_update_releases_the_number(store: Store) -> None:
    account = await new_account(store)
    faxbox = await new_faxbox(store, account)
    flaky = _FlakyStore(store.client, store.db)
    await store.add_account_number(account.id, "+4930555555")
    with pytest.raises(ConnectionFailure):
        await flaky.assign_number(faxbox.id, "+4930555555")
    assert await store.find_number("+4930555555") is None
    assert (await store.get_faxbox(faxbox.id)).numbers == []


async def test_enable_disable_and_update(store: Store) -> None:
    account = await new_account(store)
    faxbox = await new_faxbox(store, account)
    await store.add_account_number(account.id, "+4930777777")
    await store.assign_number(faxbox.id, "+4930777777")

    assert (await store.disable_faxbox(faxbox.id)).enabled is False
    assert (await store.enable_faxbox(faxbox.id)).enabled is True

    updated = await store.update_faxbox(
        faxbox.id,
        identity="+49 30 777777",
        timezone="Europe/Berlin",
        permission_list=["@Example.com", "partner.org", "Boss@Corp.example"],
        retry={"attempts": 5, "delays_s": [60]},
    )
    assert updated.timezone == "Europe/Berlin"
    assert updated.permission_list == ["@example.com", "partner.org", "boss@corp.example"]
    assert updated.retry.attempts == 5
    assert updated.numbers == ["+4930777777"]  # untouched by the update
    assert await store.get_faxbox(faxbox.id) == updated

    with pytest.raises(ValidationError, match="time zone"):
        await store.update_faxbox(faxbox.id, timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        await store.update_faxbox(faxbox.id, identity="x" * 21)
    with pytest.raises(ValidationError, match="printable ASCII"):
        await store.update_faxbox(faxbox.id, identity="Müller")
    with pytest.raises(ValueError, match="numbers"):
        await store.update_faxbox(faxbox.id, numbers=["+4930111111"])
    with pytest.raises(NotFound):
        await store.disable_faxbox("fbx_missing")


# --- carriers -----------------------------------------------------------------------------


async def test_carriers(store: Store) -> None:
    await store.add_carrier(Carrier(name="backup", flags=["fax"], priority=20, channel_cap=4))
    await store.add_carrier(
        Carrier(name="main", flags=["fax", "t38"], priority=10, sip_host="sip.example.net")
    )
    with pytest.raises(DuplicateCarrier):
        await store.add_carrier(Carrier(name="main"))
    assert [c.name for c in await store.list_carriers()] == ["main", "backup"]
    assert [c.name for c in await store.list_carriers(flag="t38")] == ["main"]


# --- documents (GridFS) -------------------------------------------------------------------


async def test_gridfs_round_trip_10_mb(store: Store) -> None:
    data = os.urandom(10 * 1024 * 1024)
    ref = await store.documents.put(
        "acc_docs", "202501", data, filename="fax.pdf", content_type="application/pdf"
    )
    assert ref.length == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.model_validate_json(ref.model_dump_json()) == ref  # travels as JSON

    assert await store.documents.get(ref) == data

    chunks = [chunk async for chunk in store.documents.stream(ref)]
    assert len(chunks) > 1
    assert all(len(c) <= CHUNK_SIZE for c in chunks)
    assert b"".join(chunks) == data


async def test_put_from_async_iterator(store: Store) -> None:
    pieces = [os.urandom(n) for n in (1, 100_000, CHUNK_SIZE, 3 * CHUNK_SIZE + 7, 0, 5)]

    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    ref = await store.documents.put(
        "acc_docs",
        "202501",
        source(),
        filename="scan.tiff",
        content_type="image/tiff",
        metadata={"fax_id": "f1", "pages": 3},
    )
    whole = b"".join(pieces)
    assert ref.sha256 == hashlib.sha256(whole).hexdigest()
    assert await store.documents.get(ref) == whole

    with pytest.raises(ValueError, match="must not contain"):
        await store.documents.put(
            "acc_docs", "202501", b"x", filename="a", content_type="b", metadata={"a.b": 1}
        )


async def test_documents_keep_the_gridfs_layout_both_ways(store: Store) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 11)
    ours = await store.documents.put(
        "acc_grid", "202501", data, filename="ours.tif", content_type="image/tiff"
    )
    bucket = store.documents.bucket("acc_grid", "202501")
    # A stock GridFS reader reads what we wrote ...
    stream = await bucket.open_download_stream(ours.file_id)
    assert await stream.read() == data
    # ... and we read what a stock GridFS writer wrote (chunks with ObjectId _ids).
    await bucket.upload_from_stream_with_id("doc_stock", "stock.pdf", data)
    stock = ours.model_copy(update={"file_id": "doc_stock"})
    assert await store.documents.get(stock) == data
    await store.documents.delete(stock)
    chunks = store.db[f"{document_bucket_name('acc_grid', '202501')}.chunks"]
    assert await chunks.count_documents({"files_id": "doc_stock"}) == 0


async def test_a_failed_put_leaves_nothing_and_a_lost_chunk_is_reported(store: Store) -> None:
    name = document_bucket_name("acc_broken", "202501")

    async def breaks() -> AsyncIterator[bytes]:
        yield os.urandom(CHUNK_SIZE + 1)
        raise OSError("the source went away")

    with pytest.raises(OSError, match="went away"):
        await store.documents.put(
            "acc_broken", "202501", breaks(), filename="x.pdf", content_type="application/pdf"
        )
    assert await store.db[f"{name}.chunks"].count_documents({}) == 0
    assert await store.db[f"{name}.files"].count_documents({}) == 0

    ref = await store.documents.put(
        "acc_broken", "202501", os.urandom(CHUNK_SIZE + 1), filename="y", content_type="z"
    )
    await store.db[f"{name}.chunks"].delete_one({"_id": f"{ref.file_id}:1"})
    with pytest.raises(DocumentCorrupt, match="chunk 1 of 2 is missing"):
        await store.documents.get(ref)


async def test_delete_month_removes_only_that_month(store: Store) -> None:
    january = await store.documents.put(
        "acc_del", "202501", b"jan", filename="a.pdf", content_type="application/pdf"
    )
    february = await store.documents.put(
        "acc_del", "202502", b"feb", filename="b.pdf", content_type="application/pdf"
    )
    other_account = await store.documents.put(
        "acc_keep", "202501", b"other", filename="c.pdf", content_type="application/pdf"
    )

    await store.documents.refs("acc_del", "202501").insert_one({"_id": "k", "ref": "jan"})
    await store.documents.refs("acc_del", "202502").insert_one({"_id": "k", "ref": "feb"})
    await store.documents.delete_month("acc_del", "202501")
    await store.documents.delete_month("acc_del", "202501")  # idempotent

    with pytest.raises(NotFound):
        await store.documents.get(january)
    assert await store.documents.get(february) == b"feb"
    assert await store.documents.get(other_account) == b"other"
    names = set(await store.db.list_collection_names())
    gone = document_bucket_name("acc_del", "202501")
    assert not {f"{gone}.files", f"{gone}.chunks", f"{gone}.refs"} & names
    assert f"{document_bucket_name('acc_del', '202502')}.files" in names
    assert await store.documents.refs("acc_del", "202502").find_one({"_id": "k"}) is not None


# --- history ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def history_items(store: Store) -> list[dict[str, Any]]:
    """75 items over Nov 2024 - Jan 2025, with runs of equal timestamps and edge times."""
    writes = HistoryWrites(store.history)
    items: list[dict[str, Any]] = []
    for month_start in (
        datetime(2024, 11, 1, tzinfo=UTC),
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    ):
        for i in range(25):
            if i == 0:
                at = month_start  # first millisecond of the month
            elif i == 24:
                at = month_start + timedelta(days=28) - timedelta(milliseconds=1)
            elif 3 <= i <= 8:
                at = month_start + timedelta(days=3)  # six faxes in the same millisecond
            elif 14 <= i <= 19:
                at = month_start + timedelta(days=14)
            else:
                at = month_start + timedelta(days=i, minutes=i)
            doc = {
                # Random ids, so id order differs from insertion order within a run.
                "_id": f"fax_{uuid.uuid4().hex[:12]}",
                "created_at": at,
                "status": "failed" if i % 5 == 0 else "sent",
                "pages": i,
            }
            await writes.insert("acc_hist", doc)
            items.append(doc)
    return items


def newest_first(items: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(items, key=lambda d: (d["created_at"], d["_id"]), reverse=True)
    return [d["_id"] for d in ordered]


async def walk(store: Store, start: datetime, end: datetime, **kwargs: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.history.query_range("acc_hist", start, end, cursor=cursor, **kwargs)
        pages.append([d["_id"] for d in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100, "pagination does not end"


async def test_history_pages_cover_three_months_exactly(
    store: Store, history_items: list[dict[str, Any]]
) -> None:
    start = datetime(2024, 10, 1, tzinfo=UTC)  # October has no collection: skipped
    end = datetime(2025, 2, 1, tzinfo=UTC)
    pages = await walk(store, start, end, limit=7)
    assert [len(p) for p in pages] == [7] * 10 + [5]
    flat = [i for p in pages for i in p]
    assert flat == newest_first(history_items)  # no gaps, no repeats, right order


async def test_history_oldest_first_and_filters(
    store: Store, history_items: list[dict[str, Any]]
) -> None:
    start = datetime(2024, 11, 20, tzinfo=UTC)
    end = datetime(2025, 1, 4, tzinfo=UTC)  # excludes the run at Jan 4th 00:00
    inside = [d for d in history_items if start <= d["created_at"] < end]

    pages = await walk(store, start, end, limit=4, newest_first=False)
    assert [i for p in pages for i in p] == list(reversed(newest_first(inside)))

    failed = [d for d in inside if d["status"] == "failed"]
    pages = await walk(store, start, end, limit=2, filter={"status": "failed"})
    assert [i for p in pages for i in p] == newest_first(failed)


async def test_history_exact_last_page_has_no_cursor(
    store: Store, history_items: list[dict[str, Any]]
) -> None:
    start = datetime(2024, 12, 1, tzinfo=UTC)
    end = datetime(2025, 1, 1, tzinfo=UTC)
    page = await store.history.query_range("acc_hist", start, end, limit=25)
    assert len(page.items) == 25
    assert page.next_cursor is None
    assert page.items[0]["created_at"].tzinfo is not None


async def test_history_cursor_checks(store: Store, history_items: list[dict[str, Any]]) -> None:
    start, end = datetime(2024, 11, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    page = await store.history.query_range("acc_hist", start, end, limit=3)
    assert page.next_cursor is not None
    with pytest.raises(InvalidCursor):
        await store.history.query_range("acc_hist", start, end, cursor="not-a-cursor")
    with pytest.raises(InvalidCursor, match="other order"):
        await store.history.query_range(
            "acc_hist", start, end, cursor=page.next_cursor, newest_first=False
        )
    empty = await store.history.query_range("acc_none", start, end)
    assert empty.items == []
    assert empty.next_cursor is None


async def test_history_index_and_drop_month(store: Store) -> None:
    writes = HistoryWrites(store.history)
    at = datetime(2023, 5, 5, tzinfo=UTC)
    await writes.insert("acc_drop", {"_id": "f1", "created_at": at})
    await writes.insert("acc_drop", {"_id": "f2", "created_at": at + timedelta(days=31)})
    name = history_collection_name("acc_drop", "202305")
    indexes = {ix["name"] async for ix in await store.db[name].list_indexes()}
    assert "created_at_id" in indexes
    assert await store.history.months("acc_drop") == ["202305", "202306"]

    await store.history.drop_month("acc_drop", "202305")
    assert await store.history.months("acc_drop") == ["202306"]

    # Written again after the drop: the index is created again.
    await writes.insert("acc_drop", {"_id": "f3", "created_at": at})
    indexes = {ix["name"] async for ix in await store.db[name].list_indexes()}
    assert "created_at_id" in indexes

    with pytest.raises(ValueError, match="created_at"):
        await writes.insert("acc_drop", {"_id": "f4"})


async def test_store_errors_have_one_line_messages() -> None:
    for error in (
        DuplicateRealm("a.example"),
        DuplicateEmail("a@b.c"),
        NumberAlreadyAssigned("+4930", "fbx_1"),
        NotFound("faxbox", "fbx_1"),
    ):
        assert isinstance(error, StoreError)
        assert "\n" not in str(error)
