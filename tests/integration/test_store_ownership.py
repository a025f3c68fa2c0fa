"""Numbers, caller ids, destinations and secrets owned by the right account, on the real
database: what a platform is safe with by default, and what older documents read as."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from faxbox.shared import numbers
from faxbox.shared.secretbox import SecretBox, SecretKeyMissing, SecretUnreadable
from faxbox.shared.store import (
    Account,
    CallerIdNotOwned,
    Carrier,
    Faxbox,
    NotFound,
    NumberHeldByAnotherAccount,
    NumberInUse,
    NumberNotInInventory,
    SenderAuth,
    Store,
    User,
)
from faxbox.shared.store.store import MIGRATIONS

pytestmark = pytest.mark.integration


async def account(store: Store, **fields: object) -> Account:
    realm = f"{uuid.uuid4().hex[:8]}.example.com"
    return await store.create_account(Account(name="Acme", realm=realm, **fields))  # type: ignore[arg-type]


async def faxbox(store: Store, owner_account: Account) -> Faxbox:
    owner = await store.create_user(
        User(account_id=owner_account.id, email=f"{uuid.uuid4().hex[:8]}@example.com")
    )
    return await store.create_faxbox(Faxbox(account_id=owner_account.id, owner_user_id=owner.id))


def a_number() -> str:
    return f"+4930{uuid.uuid4().int % 10**8:08d}"


async def test_a_number_belongs_to_one_account_and_returns_to_it(store: Store) -> None:
    a, b = await account(store), await account(store)
    box_a, box_b = await faxbox(store, a), await faxbox(store, b)
    number = a_number()

    with pytest.raises(NumberNotInInventory, match=a.realm):
        await store.assign_number(box_a.id, number)  # not in anyone's inventory yet
    await store.add_account_number(a.id, number)
    await store.add_account_number(a.id, number)  # again: a no-op
    with pytest.raises(NumberHeldByAnotherAccount):
        await store.add_account_number(b.id, number)
    with pytest.raises(NumberNotInInventory):
        await store.assign_number(box_b.id, number)

    await store.assign_number(box_a.id, number)
    with pytest.raises(NumberInUse):
        await store.remove_account_number(a.id, number)
    assert [(e.number, f) for e, f in await store.list_account_numbers(a.id)] == [
        (number, box_a.id)
    ]

    await store.unassign_number(number)
    # Back in A's inventory, not in the public pool: B still cannot take it.
    assert [(e.number, f) for e, f in await store.list_account_numbers(a.id)] == [(number, None)]
    with pytest.raises(NumberHeldByAnotherAccount):
        await store.add_account_number(b.id, number)

    await store.remove_account_number(a.id, number)  # released to the public pool
    await store.add_account_number(b.id, number)
    await store.assign_number(box_b.id, number)
    with pytest.raises(NotFound):
        await store.remove_account_number(a.id, number)


async def test_twelve_accounts_racing_for_one_number_one_wins(store: Store) -> None:
    contenders = [await account(store) for _ in range(12)]
    number = a_number()
    results = await asyncio.gather(
        *(store.add_account_number(c.id, number) for c in contenders), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(r, NumberHeldByAnotherAccount) for r in results if r not in won)


async def test_numbers_assigned_before_inventories_are_adopted_once(store: Store) -> None:
    a = await account(store)
    box = await faxbox(store, a)
    number = a_number()
    # An assignment as the code before inventories wrote it: no inventory entry.
    await store.numbers.insert_one({"_id": number, "faxbox_id": box.id, "account_id": a.id})
    await store.db[MIGRATIONS].delete_many({})
    await store.ensure_indexes()
    held = await store.find_account_number(number)
    assert held is not None
    assert held.account_id == a.id


async def test_an_unassigned_legacy_number_still_returns_to_its_account(store: Store) -> None:
    a, b = await account(store), await account(store)
    box = await faxbox(store, a)
    number = a_number()
    await store.numbers.insert_one({"_id": number, "faxbox_id": box.id, "account_id": a.id})
    await store.unassign_number(number)
    with pytest.raises(NumberHeldByAnotherAccount):
        await store.add_account_number(b.id, number)


async def test_caller_id_is_one_of_the_faxbox_numbers(store: Store) -> None:
    a, b = await account(store), await account(store)
    box, other = await faxbox(store, a), await faxbox(store, a)
    own, sibling, foreign = a_number(), a_number(), a_number()
    for n in (own, sibling):
        await store.add_account_number(a.id, n)
    await store.add_account_number(b.id, foreign)
    await store.assign_number(box.id, own)
    await store.assign_number(other.id, sibling)
    box = await store.get_faxbox(box.id)

    assert await store.check_caller_id(box, own) == own
    with pytest.raises(CallerIdNotOwned, match="faxbox's own numbers"):
        await store.check_caller_id(box, sibling)
    assert await store.check_caller_id(box, sibling, "account") == sibling
    with pytest.raises(CallerIdNotOwned, match="account's own numbers"):
        await store.check_caller_id(box, foreign, "account")
    with pytest.raises(CallerIdNotOwned):
        await store.check_caller_id(box, "+12125550100", "account")

    # Unassigned, the number is no longer presented.
    await store.update_faxbox(box.id, caller_id=own)
    await store.unassign_number(own)
    assert (await store.get_faxbox(box.id)).caller_id is None
    # Released from the account, nobody in it presents it any more.
    await store.update_faxbox(box.id, caller_id=sibling)
    await store.unassign_number(sibling)
    await store.remove_account_number(a.id, sibling)
    assert (await store.get_faxbox(box.id)).caller_id is None


async def test_accounts_fax_their_home_country_by_default(store: Store) -> None:
    us = await account(store)
    assert set(us.allowed_countries) == numbers.NANP_REGIONS
    assert us.blocked_categories == ["premium_rate", "shared_cost"]
    with pytest.raises(numbers.NumberRefused) as refused:
        numbers.normalize("+442079460958", us.number_policy())
    assert refused.value.code is numbers.RefusalCode.COUNTRY_NOT_ALLOWED
    assert "GB" in refused.value.message
    assert "reseller" in refused.value.message
    assert numbers.normalize("+14165550123", us.number_policy()).region == "CA"

    de = await account(store, country="DE")
    assert de.allowed_countries == ["DE"]
    widened = await store.update_account(de.id, allowed_countries=["de", "gb", "US"])
    assert widened.allowed_countries == ["DE", "GB", "US"]
    assert numbers.normalize("+442079460958", widened.number_policy()).region == "GB"
    everywhere = await store.update_account(de.id, allowed_countries=["*"])
    assert numbers.normalize("+81312345678", everywhere.number_policy()).region == "JP"
    with pytest.raises(ValueError, match="country code"):
        await store.update_account(de.id, allowed_countries=["UK"])


async def test_documents_written_before_the_defaults_read_safely(store: Store) -> None:
    a = await account(store)
    # An account and a faxbox as the code before this change stored them.
    await store.accounts.update_one(
        {"_id": a.id}, {"$set": {"allowed_countries": []}, "$unset": {"country": ""}}
    )
    assert set((await store.get_account(a.id)).allowed_countries) == numbers.NANP_REGIONS
    box = await faxbox(store, a)
    await store.faxboxes.update_one(
        {"_id": box.id},
        {"$set": {"require_authenticated_sender": False}, "$unset": {"sender_auth": ""}},
    )
    assert (await store.get_faxbox(box.id)).sender_auth is SenderAuth.REQUIRED
    off = await store.update_faxbox(box.id, sender_auth="off")
    assert off.sender_auth is SenderAuth.OFF


async def test_carrier_passwords_are_stored_sealed(store: Store) -> None:
    box = SecretBox("k" * 40)
    carrier = Carrier(name=f"c{uuid.uuid4().hex[:6]}", sip_username="u").with_password(
        "hunter2-sip", box
    )
    await store.add_carrier(carrier)
    raw = await store.carriers.find_one({"_id": carrier.id})
    assert raw is not None
    assert "hunter2" not in str(raw)
    assert raw["sip_password"].startswith("sealed:v1:")
    stored = await store.get_carrier_by_name(carrier.name)
    assert stored.sip_secret(box) == "hunter2-sip"
    with pytest.raises(SecretKeyMissing):
        stored.sip_secret(None)
    with pytest.raises(SecretUnreadable):
        stored.sip_secret(SecretBox("x" * 40))
    # A sealed value copied into another carrier does not open there.
    other = Carrier(name=f"d{uuid.uuid4().hex[:6]}", sip_password=raw["sip_password"])
    with pytest.raises(SecretUnreadable):
        other.sip_secret(box)
