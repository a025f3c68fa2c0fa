"""The store: global collections (accounts, users, faxboxes, numbers, carriers).

Everything stays inside what both MongoDB 8 and FerretDB v1.24 support: no
transactions, so every change is a single-document write, and operations that touch
two documents (assigning a number) are ordered so a failure between the writes leaves
nothing that routes wrongly, and a retry repairs it.

Naming convention of the read methods: ``get_*`` raises :class:`NotFound`, ``find_*``
returns ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any, Literal, Self

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared.settings import MongoSettings
from faxbox.shared.store.claims import claim
from faxbox.shared.store.documents import DocumentStore
from faxbox.shared.store.errors import (
    CallerIdNotOwned,
    DuplicateCarrier,
    DuplicateEmail,
    DuplicateRealm,
    NotFound,
    NumberAlreadyAssigned,
    NumberHeldByAnotherAccount,
    NumberInUse,
    NumberNotInInventory,
    StoreError,
)
from faxbox.shared.store.history import HistoryStore
from faxbox.shared.store.lookup import insert_new, one, set_fields
from faxbox.shared.store.models import (
    Account,
    AccountNumber,
    Carrier,
    Faxbox,
    NumberAssignment,
    StoreModel,
    User,
    validate_number_key,
)

Doc = dict[str, Any]

# Index definitions per global collection. Names are explicit so that re-running
# create_indexes is a no-op on both servers (same name, same spec). Number uniqueness
# needs no index: the number is the ``_id`` of its document in ``numbers``.
INDEXES: dict[str, list[IndexModel]] = {
    "accounts": [
        IndexModel([("realm", ASCENDING)], name="realm_unique", unique=True),
        IndexModel([("reseller_id", ASCENDING)], name="reseller_id"),
    ],
    "users": [
        IndexModel([("email_lower", ASCENDING)], name="email_lower_unique", unique=True),
        IndexModel([("account_id", ASCENDING)], name="account_id"),
    ],
    "faxboxes": [
        IndexModel([("owner_user_id", ASCENDING)], name="owner_user_id"),
        IndexModel([("account_id", ASCENDING)], name="account_id"),
    ],
    "numbers": [
        IndexModel([("faxbox_id", ASCENDING)], name="faxbox_id"),
        IndexModel([("account_id", ASCENDING)], name="account_id"),
    ],
    "account_numbers": [
        IndexModel([("account_id", ASCENDING)], name="account_id"),
    ],
    "carriers": [
        IndexModel([("name", ASCENDING)], name="name_unique", unique=True),
        IndexModel([("priority", ASCENDING), ("name", ASCENDING)], name="priority_name"),
    ],
}

# Fields of a faxbox that update_faxbox must not touch: identity and ownership are
# fixed, and ``numbers`` mirrors the numbers collection (assign/unassign keep both).
_FROZEN_FAXBOX_FIELDS = frozenset({"id", "_id", "account_id", "numbers", "created_at"})
_FROZEN_ACCOUNT_FIELDS = frozenset({"id", "_id", "realm", "created_at"})


def _check_changes(
    kind: str, model: type[StoreModel], frozen: frozenset[str], changes: Mapping[str, Any]
) -> None:
    """ValueError for a change of a field that is fixed once made, or of no field."""
    fixed = frozen.intersection(changes)
    if fixed:
        raise ValueError(f"update_{kind} cannot change {', '.join(sorted(fixed))}")
    unknown = set(changes) - set(model.model_fields)
    if unknown:
        raise ValueError(f"unknown {kind} field(s): {', '.join(sorted(unknown))}")


def _changed_fields(current: StoreModel, changes: Mapping[str, Any]) -> Doc:
    """The stored form of the ``changes`` fields, once ``current`` with them validates
    as a whole (only these are written: see ``update_faxbox``)."""
    doc = type(current).model_validate({**current.model_dump(), **changes}).to_doc()
    return {name: doc[name] for name in changes}


# One-time data changes, each done once by whoever claims its name first.
MIGRATIONS = "store_migrations"
_INVENTORY_MIGRATION = "number-inventory-from-assignments"

CallerIdScope = Literal["faxbox", "account"]


class Store:
    """Access to the Faxbox database. Build with :meth:`connect`, end with :meth:`close`."""

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]) -> None:
        self.client = client
        self.db = db
        self.documents = DocumentStore(db)
        self.history = HistoryStore(db)

    @classmethod
    async def connect(cls, settings: MongoSettings, *, timeout_s: float = 10.0) -> Self:
        """Connect and check the server answers, so a bad URL fails here, not later."""
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            settings.mongo_url,
            # Aware UTC datetimes everywhere: history ordering and month keys depend
            # on comparing them, and naive/aware mixes raise at runtime.
            tz_aware=True,
            tzinfo=UTC,
            serverSelectionTimeoutMS=int(timeout_s * 1000),
        )
        try:
            await client.admin.command("ping")
        except BaseException:
            await client.close()
            raise
        return cls(client, client[settings.mongo_db])

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> bool:
        """True when the server answers; used by readiness checks."""
        try:
            await self.client.admin.command("ping")
        except Exception:
            return False
        return True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- collections ---------------------------------------------------------------

    @property
    def accounts(self) -> AsyncCollection[Doc]:
        return self.db["accounts"]

    @property
    def users(self) -> AsyncCollection[Doc]:
        return self.db["users"]

    @property
    def faxboxes(self) -> AsyncCollection[Doc]:
        return self.db["faxboxes"]

    @property
    def numbers(self) -> AsyncCollection[Doc]:
        return self.db["numbers"]

    @property
    def carriers(self) -> AsyncCollection[Doc]:
        return self.db["carriers"]

    @property
    def account_numbers(self) -> AsyncCollection[Doc]:
        return self.db["account_numbers"]

    async def ensure_indexes(self) -> None:
        """Create the global collections' indexes; safe to run at every start-up."""
        for name, indexes in INDEXES.items():
            for index in indexes:
                # One index per createIndexes command: FerretDB v1.24 panics and drops
                # the connection ("slice bounds out of range") when one command names
                # two or more indexes that already exist, i.e. on every restart.
                await self.db[name].create_indexes([index])
        await self._inventory_from_assignments()

    async def _inventory_from_assignments(self) -> None:
        """Put every number assigned before inventories existed into its account's.

        Once per database (the first process to claim the migration runs it); a number
        it misses (a process stopped half-way) returns to its account when unassigned.
        """
        if not await claim(self.db[MIGRATIONS], _INVENTORY_MIGRATION):
            return
        async for doc in self.numbers.find({}, {"_id": 1, "account_id": 1}):
            await self._hold(AccountNumber(number=doc["_id"], account_id=doc["account_id"]))

    # -- accounts ------------------------------------------------------------------

    async def create_account(self, account: Account) -> Account:
        taken = DuplicateRealm(account.realm)
        return await insert_new(self.accounts, account, "account", {"realm": account.realm}, taken)

    async def get_account(self, account_id: str) -> Account:
        return await one(self.accounts, {"_id": account_id}, Account, "account", account_id)

    async def get_account_by_realm(self, realm: str) -> Account:
        realm = realm.strip().lower()
        return await one(self.accounts, {"realm": realm}, Account, "account with realm", realm)

    async def list_accounts(self, *, reseller_id: str | None = None) -> list[Account]:
        query: Doc = {} if reseller_id is None else {"reseller_id": reseller_id}
        cursor = self.accounts.find(query).sort("realm", ASCENDING)
        return [Account.from_doc(doc) async for doc in cursor]

    async def update_account(self, account_id: str, **changes: Any) -> Account:
        """Change an account's settings, validated as a whole, writing only those fields."""
        _check_changes("account", Account, _FROZEN_ACCOUNT_FIELDS, changes)
        current = await self.get_account(account_id)
        fields = _changed_fields(current, changes)
        return await set_fields(self.accounts, account_id, fields, Account, "account", account_id)

    # -- users ---------------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        await self.get_account(user.account_id)  # NotFound rather than an orphan user
        taken = DuplicateEmail(user.email)
        return await insert_new(self.users, user, "user", {"email_lower": user.email_lower}, taken)

    async def get_user(self, user_id: str) -> User:
        return await one(self.users, {"_id": user_id}, User, "user", user_id)

    async def find_user_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup through the stored lower-cased address."""
        doc = await self.users.find_one({"email_lower": email.strip().lower()})
        return None if doc is None else User.from_doc(doc)

    async def list_users(self, account_id: str) -> list[User]:
        cursor = self.users.find({"account_id": account_id}).sort("email_lower", ASCENDING)
        return [User.from_doc(doc) async for doc in cursor]

    async def set_alternate_email(self, user_id: str, alternate_email: str | None) -> User:
        """Set (or clear, with None) where the user's notifications go instead."""
        current = await self.get_user(user_id)
        checked = User.model_validate(current.model_dump() | {"alternate_email": alternate_email})
        return await self._set_user(user_id, {"alternate_email": checked.alternate_email})

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> User:
        """Store (or clear, with None) the user's password hash; hashing is the caller's."""
        return await self._set_user(user_id, {"password_hash": password_hash})

    async def set_daily_page_limit(self, user_id: str, pages: int | None) -> User:
        """The user's own daily cap: None for the platform's default, 0 for none."""
        current = await self.get_user(user_id)
        checked = User.model_validate(current.model_dump() | {"daily_page_limit": pages})
        return await self._set_user(user_id, {"daily_page_limit": checked.daily_page_limit})

    async def _set_user(self, user_id: str, fields: Mapping[str, Any]) -> User:
        return await set_fields(self.users, user_id, fields, User, "user", user_id)

    # -- faxboxes ------------------------------------------------------------------

    async def create_faxbox(self, faxbox: Faxbox) -> Faxbox:
        """Insert a faxbox without numbers; add numbers with :meth:`assign_number`."""
        if faxbox.numbers:
            # Numbers live in two places; only assign_number writes both safely.
            raise ValueError("create the faxbox without numbers, then use assign_number")
        owner = await self.get_user(faxbox.owner_user_id)
        if owner.account_id != faxbox.account_id:
            raise StoreError(
                f"user {owner.id} belongs to account {owner.account_id}, not to {faxbox.account_id}"
            )
        await self.faxboxes.insert_one(faxbox.to_doc())
        return faxbox

    async def get_faxbox(self, faxbox_id: str) -> Faxbox:
        return await one(self.faxboxes, {"_id": faxbox_id}, Faxbox, "faxbox", faxbox_id)

    async def list_faxboxes(
        self, *, account_id: str | None = None, owner_user_id: str | None = None
    ) -> list[Faxbox]:
        query: Doc = {}
        if account_id is not None:
            query["account_id"] = account_id
        if owner_user_id is not None:
            query["owner_user_id"] = owner_user_id
        cursor = self.faxboxes.find(query).sort("_id", ASCENDING)
        return [Faxbox.from_doc(doc) async for doc in cursor]

    async def delete_faxbox(self, faxbox_id: str) -> None:
        """Remove a faxbox that has no numbers (unassign them first)."""
        faxbox = await self.get_faxbox(faxbox_id)
        if faxbox.numbers or await self.numbers.find_one({"faxbox_id": faxbox_id}, {"_id": 1}):
            raise StoreError(f"faxbox {faxbox_id} still has numbers; unassign them first")
        await self.faxboxes.delete_one({"_id": faxbox_id})

    async def enable_faxbox(self, faxbox_id: str) -> Faxbox:
        return await self._set_faxbox(faxbox_id, {"enabled": True})

    async def disable_faxbox(self, faxbox_id: str) -> Faxbox:
        return await self._set_faxbox(faxbox_id, {"enabled": False})

    async def update_faxbox(self, faxbox_id: str, **changes: Any) -> Faxbox:
        """Change settings of a faxbox, validated as a whole, writing only those fields.

        Only the named fields are ``$set``, so a concurrent assign_number (which
        touches ``numbers``) is never overwritten by a stale copy.
        """
        _check_changes("faxbox", Faxbox, _FROZEN_FAXBOX_FIELDS, changes)
        current = await self.get_faxbox(faxbox_id)
        return await self._set_faxbox(faxbox_id, _changed_fields(current, changes))

    async def _set_faxbox(self, faxbox_id: str, fields: Mapping[str, Any]) -> Faxbox:
        return await set_fields(self.faxboxes, faxbox_id, fields, Faxbox, "faxbox", faxbox_id)

    # -- number inventory ----------------------------------------------------------

    async def _hold(self, entry: AccountNumber) -> AccountNumber:
        """Insert an inventory entry; the existing one if this account holds it already."""
        try:
            await self.account_numbers.insert_one(entry.to_doc())
        except DuplicateKeyError:
            existing = await self.account_numbers.find_one({"_id": entry.number})
            if existing is None:  # released in between: let the caller retry
                raise StoreError(f"number {entry.number} changed while adding it; retry") from None
            held = AccountNumber.from_doc(existing)
            if held.account_id != entry.account_id:
                raise NumberHeldByAnotherAccount(entry.number) from None
            return held
        return entry

    async def add_account_number(self, account_id: str, number: str) -> AccountNumber:
        """Put ``number`` in the account's inventory (again: a no-op).

        The inventory entry's ``_id`` is the number, so of two accounts asking for one
        number only one insert succeeds; the other gets NumberHeldByAnotherAccount.
        """
        number = validate_number_key(number)
        await self.get_account(account_id)
        assigned = await self.find_number(number)
        if assigned is not None and assigned.account_id != account_id:
            raise NumberHeldByAnotherAccount(number)
        return await self._hold(AccountNumber(number=number, account_id=account_id))

    async def remove_account_number(self, account_id: str, number: str) -> None:
        """Release ``number`` from the account to the public pool (unassign it first)."""
        held = await self.find_account_number(number)
        if held is None or held.account_id != account_id:
            raise NotFound("number in this account", number)
        assigned = await self.find_number(number)
        if assigned is not None:
            raise NumberInUse(number, assigned.faxbox_id)
        await self.account_numbers.delete_one({"_id": number, "account_id": account_id})
        # A caller id the account no longer holds is nobody's to present.
        await self.faxboxes.update_many(
            {"account_id": account_id, "caller_id": number}, {"$set": {"caller_id": None}}
        )

    async def find_account_number(self, number: str) -> AccountNumber | None:
        doc = await self.account_numbers.find_one({"_id": number})
        return None if doc is None else AccountNumber.from_doc(doc)

    async def list_account_numbers(self, account_id: str) -> list[tuple[AccountNumber, str | None]]:
        """The account's inventory, each number with the faxbox it is assigned to (or None)."""
        cursor = self.account_numbers.find({"account_id": account_id}).sort("_id", ASCENDING)
        held = [AccountNumber.from_doc(doc) async for doc in cursor]
        assigned = {
            doc["_id"]: doc["faxbox_id"]
            async for doc in self.numbers.find({"account_id": account_id}, {"faxbox_id": 1})
        }
        return [(entry, assigned.get(entry.number)) for entry in held]

    async def check_caller_id(
        self,
        faxbox: Faxbox,
        number: str,
        scope: CallerIdScope = "faxbox",
        *,
        also: Sequence[str] = (),
    ) -> str:
        """``number`` if the faxbox may present it; CallerIdNotOwned otherwise.

        ``also`` names numbers being assigned to the faxbox in the same change.
        """
        own = [*faxbox.numbers, *(n for n in also if n not in faxbox.numbers)]
        if number in own:
            return number
        if scope == "account":
            held = await self.find_account_number(number)
            if held is not None and held.account_id == faxbox.account_id:
                return number
            inventory = [
                entry.number for entry, _ in await self.list_account_numbers(faxbox.account_id)
            ]
            raise CallerIdNotOwned(number, "account", inventory)
        raise CallerIdNotOwned(number, "faxbox", own)

    # -- numbers -------------------------------------------------------------------

    async def assign_number(self, faxbox_id: str, number: str) -> NumberAssignment:
        """Give ``number`` to a faxbox; raises NumberAlreadyAssigned if another has it.

        The number must be in the faxbox's account's inventory (NumberNotInInventory).
        Order matters without transactions: the ``numbers`` document is the lock
        (its ``_id`` is the number), so it is written first; the faxbox's ``numbers``
        list is only a mirror for display. If the mirror update fails, the lock is
        released again so nothing stays half-written. Assigning a number again to the
        same faxbox is a no-op that also repairs a missing mirror entry.
        """
        number = validate_number_key(number)
        faxbox = await self.get_faxbox(faxbox_id)
        held = await self.find_account_number(number)
        if held is None or held.account_id != faxbox.account_id:
            existing = await self.find_number(number)
            if existing is None or existing.faxbox_id != faxbox.id:
                account = await self.get_account(faxbox.account_id)
                raise NumberNotInInventory(number, account.realm)
        assignment = NumberAssignment(
            number=number, faxbox_id=faxbox.id, account_id=faxbox.account_id
        )
        try:
            await self.numbers.insert_one(assignment.to_doc())
        except DuplicateKeyError:
            existing_doc = await self.numbers.find_one({"_id": number})
            if existing_doc is None:  # unassigned in between: let the caller retry
                raise StoreError(f"number {number} changed while assigning; retry") from None
            existing = NumberAssignment.from_doc(existing_doc)
            if existing.faxbox_id != faxbox.id:
                raise NumberAlreadyAssigned(number, existing.faxbox_id) from None
            await self.faxboxes.update_one({"_id": faxbox.id}, {"$addToSet": {"numbers": number}})
            return existing

        try:
            result = await self.faxboxes.update_one(
                {"_id": faxbox.id}, {"$addToSet": {"numbers": number}}
            )
            if result.matched_count == 0:
                raise NotFound("faxbox", faxbox.id)  # deleted since we read it
        except BaseException:
            # Conditional on our faxbox so a concurrent reassignment is never undone.
            await self.numbers.delete_one({"_id": number, "faxbox_id": faxbox.id})
            raise
        return assignment

    async def unassign_number(self, number: str, *, faxbox_id: str | None = None) -> None:
        """Take ``number`` away from its faxbox (checking it is ``faxbox_id``'s, if given).

        The mirror entry goes first: if we stop between the writes, the number still
        routes to its faxbox and another unassign finishes the job, whereas deleting
        the lock first could let a second faxbox take the number while the first
        still lists it.
        """
        doc = await self.numbers.find_one({"_id": number})
        if doc is None:
            raise NotFound("number", number)
        assignment = NumberAssignment.from_doc(doc)
        if faxbox_id is not None and assignment.faxbox_id != faxbox_id:
            raise NumberAlreadyAssigned(number, assignment.faxbox_id)
        # Back to its account, not to the public pool (a number assigned before
        # inventories existed may have no entry yet).
        await self._hold(AccountNumber(number=number, account_id=assignment.account_id))
        await self.faxboxes.update_one(
            {"_id": assignment.faxbox_id}, {"$pull": {"numbers": number}}
        )
        # The faxbox no longer owns it, so it no longer presents it.
        await self.faxboxes.update_one(
            {"_id": assignment.faxbox_id, "caller_id": number}, {"$set": {"caller_id": None}}
        )
        await self.numbers.delete_one({"_id": number, "faxbox_id": assignment.faxbox_id})

    async def find_number(self, number: str) -> NumberAssignment | None:
        doc = await self.numbers.find_one({"_id": number})
        return None if doc is None else NumberAssignment.from_doc(doc)

    async def faxbox_for_number(self, number: str) -> tuple[Faxbox, Account] | None:
        """The faxbox a number is assigned to, with its account; None if unassigned.

        The caller decides what a disabled faxbox means; it is returned as is.
        """
        assignment = await self.find_number(number)
        if assignment is None:
            return None
        faxbox_doc = await self.faxboxes.find_one({"_id": assignment.faxbox_id})
        if faxbox_doc is None:
            return None
        account_doc = await self.accounts.find_one({"_id": assignment.account_id})
        if account_doc is None:
            return None
        return Faxbox.from_doc(faxbox_doc), Account.from_doc(account_doc)

    # -- carriers ------------------------------------------------------------------

    async def add_carrier(self, carrier: Carrier) -> Carrier:
        taken = DuplicateCarrier(carrier.name)
        return await insert_new(self.carriers, carrier, "carrier", {"name": carrier.name}, taken)

    async def list_carriers(self, *, flag: str | None = None) -> list[Carrier]:
        """Carriers in the order to try them (priority, then name)."""
        query: Doc = {} if flag is None else {"flags": flag}
        cursor = self.carriers.find(query).sort([("priority", ASCENDING), ("name", ASCENDING)])
        return [Carrier.from_doc(doc) async for doc in cursor]

    async def get_carrier_by_name(self, name: str) -> Carrier:
        return await one(self.carriers, {"name": name}, Carrier, "carrier", name)

    async def update_carrier(self, carrier: Carrier, **changes: Any) -> Carrier:
        """Write the named fields of ``carrier`` with ``changes`` applied, validated."""
        unknown = set(changes) - set(Carrier.model_fields) - {"id"}
        if unknown or "id" in changes:
            raise ValueError(f"cannot change carrier field(s): {', '.join(sorted(unknown))}")
        fields = _changed_fields(carrier, changes)
        return await set_fields(self.carriers, carrier.id, fields, Carrier, "carrier", carrier.name)

    async def remove_carrier(self, carrier_id: str) -> None:
        result = await self.carriers.delete_one({"_id": carrier_id})
        if result.deleted_count == 0:
            raise NotFound("carrier", carrier_id)
