"""Faxbox administration on behalf of an account or reseller admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faxbox.portal.access import (
    account_in_scope,
    admin_account,
    faxbox_of,
    managed_account,
    user_in_scope,
)
from faxbox.portal.security import Principal
from faxbox.shared import numbers
from faxbox.shared.store import (
    Account,
    AccountNumber,
    CallerIdNotOwned,
    Faxbox,
    NotFound,
    NumberNotInInventory,
    SenderAuth,
    Store,
    User,
)
from faxbox.shared.store.store import CallerIdScope


class InvalidInput(ValueError):
    """Input an admin typed that cannot be stored; the message says why, in plain words."""


class FaxboxChanges(BaseModel):
    """Settings to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    caller_id: str | None = None
    identity: str | None = None
    header_name: str | None = None
    header_format: str | None = Field(
        default=None,
        description="The page header line (docs/api.md); empty: the default one.",
    )
    timezone: str | None = None
    permission_list: list[str] | None = None
    sender_auth: SenderAuth | None = None
    success_notifications: bool | None = None


class AccountPolicy(BaseModel):
    """What a reseller or platform admin may change of an account; left out stays."""

    model_config = ConfigDict(extra="forbid")

    allowed_countries: list[str] | None = None
    daily_page_limit: int | None = None
    clear_daily_page_limit: bool = False


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    faxbox: Faxbox | None


def explain(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


async def list_users(store: Store, principal: Principal, account_id: str) -> list[UserRow]:
    account = await admin_account(store, principal, account_id)
    users = await store.list_users(account.id)
    boxes = {b.owner_user_id: b for b in await store.list_faxboxes(account_id=account.id)}
    return [UserRow(u, boxes.get(u.id)) for u in users]


async def get_user(store: Store, principal: Principal, account_id: str, user_id: str) -> UserRow:
    _, user = await user_in_scope(store, principal, account_id, user_id)
    return UserRow(user, await faxbox_of(store, user))


async def _faxbox_for_change(store: Store, user: User) -> Faxbox:
    """The user's faxbox, created (disabled until enabled on purpose) if there is none."""
    box = await faxbox_of(store, user)
    if box is not None:
        return box
    return await store.create_faxbox(
        Faxbox(account_id=user.account_id, owner_user_id=user.id, enabled=False)
    )


async def update_faxbox(
    store: Store,
    principal: Principal,
    account_id: str,
    user_id: str,
    changes: FaxboxChanges,
    caller_id_scope: CallerIdScope = "faxbox",
) -> UserRow:
    _, user = await user_in_scope(store, principal, account_id, user_id)
    fields: dict[str, Any] = changes.model_dump(exclude_unset=True)
    if "caller_id" in fields:
        raw = (fields["caller_id"] or "").strip()
        try:
            fields["caller_id"] = numbers.assignable(raw) if raw else None
        except numbers.NumberRefused as refused:
            raise InvalidInput(f"caller id {raw!r}: {refused.message}") from None
    for name in ("enabled", "sender_auth", "success_notifications"):
        if name in fields and fields[name] is None:
            del fields[name]
    current = await faxbox_of(store, user)
    # Validate the whole result before creating anything.
    base = current.model_dump() if current else {"account_id": account_id, "owner_user_id": user.id}
    try:
        candidate = Faxbox.model_validate({**base, **fields})
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None
    if fields.get("caller_id") is not None and fields["caller_id"] != base.get("caller_id"):
        try:
            await store.check_caller_id(candidate, fields["caller_id"], caller_id_scope)
        except CallerIdNotOwned as exc:
            raise InvalidInput(str(exc)) from None
    box = current or await _faxbox_for_change(store, user)
    if fields:
        box = await store.update_faxbox(box.id, **fields)
    return UserRow(user, box)


async def set_alternate_email(
    store: Store, principal: Principal, account_id: str, user_id: str, address: str | None
) -> UserRow:
    _, user = await user_in_scope(store, principal, account_id, user_id)
    address = (address or "").strip() or None
    try:
        user = await store.set_alternate_email(user.id, address)
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None
    return UserRow(user, await faxbox_of(store, user))


async def assign_number(
    store: Store, principal: Principal, account_id: str, user_id: str, raw: str
) -> UserRow:
    """Assign a number (normalized like the CLI does) to the user's faxbox.

    Raises NumberAlreadyAssigned when any faxbox, in any account, has it.
    """
    _, user = await user_in_scope(store, principal, account_id, user_id)
    try:
        number = numbers.assignable(raw)
    except numbers.NumberRefused as refused:
        raise InvalidInput(f"{raw.strip()!r} cannot be assigned: {refused.message}") from None
    box = await _faxbox_for_change(store, user)
    try:
        await store.assign_number(box.id, number)
    except NumberNotInInventory:
        raise InvalidInput(
            f"{number} is not one of this account's numbers; assign one from the account's "
            "list, or ask your reseller or the platform's administrator to add it"
        ) from None
    return UserRow(user, await store.get_faxbox(box.id))


async def unassign_number(
    store: Store, principal: Principal, account_id: str, user_id: str, number: str
) -> UserRow:
    _, user = await user_in_scope(store, principal, account_id, user_id)
    box = await faxbox_of(store, user)
    if box is None:
        raise NotFound("number", number)
    assignment = await store.find_number(number)
    if assignment is None or assignment.faxbox_id != box.id:
        # Someone else's number is "not found" here, not "belongs to faxbox X".
        raise NotFound("number", number)
    await store.unassign_number(number, faxbox_id=box.id)
    return UserRow(user, await store.get_faxbox(box.id))


# --- the account: its numbers and where it may fax ---------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryRow:
    number: str
    faxbox_id: str | None
    owner: str | None  # the e-mail address of the faxbox's owner


async def inventory(store: Store, principal: Principal, account_id: str) -> list[InventoryRow]:
    account = await admin_account(store, principal, account_id)
    boxes = {b.id: b for b in await store.list_faxboxes(account_id=account.id)}
    users = {u.id: u.email for u in await store.list_users(account.id)}
    return [
        InventoryRow(
            entry.number,
            faxbox_id,
            users.get(boxes[faxbox_id].owner_user_id) if faxbox_id in boxes else None,
        )
        for entry, faxbox_id in await store.list_account_numbers(account.id)
    ]


async def add_number(
    store: Store, principal: Principal, account_id: str, raw: str
) -> AccountNumber:
    """Add a number to the account (reseller/platform admin); NumberHeldByAnotherAccount
    when any other account holds it."""
    account = await managed_account(store, principal, account_id)
    try:
        number = numbers.assignable(raw)
    except numbers.NumberRefused as refused:
        raise InvalidInput(f"{raw.strip()!r} cannot be added: {refused.message}") from None
    return await store.add_account_number(account.id, number)


async def remove_number(store: Store, principal: Principal, account_id: str, number: str) -> None:
    """Release an unassigned number from the account (NumberInUse while assigned)."""
    account = await managed_account(store, principal, account_id)
    await store.remove_account_number(account.id, number)


async def update_account_policy(
    store: Store, principal: Principal, account_id: str, policy: AccountPolicy
) -> Account:
    account = await managed_account(store, principal, account_id)
    changes: dict[str, Any] = {}
    if policy.allowed_countries is not None:
        changes["allowed_countries"] = policy.allowed_countries
    if policy.clear_daily_page_limit:
        changes["daily_page_limit"] = None
    elif policy.daily_page_limit is not None:
        changes["daily_page_limit"] = policy.daily_page_limit
    if not changes:
        return account
    try:
        Account.model_validate({**account.model_dump(), **changes})
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None
    return await store.update_account(account.id, **changes)


@dataclass(frozen=True, slots=True)
class HelpAnswer:
    number: str
    to: str | None
    e164: str | None
    international_format: str | None
    category: str | None
    country: str | None
    refusal_code: str | None
    refusal: str | None


async def show_help(store: Store, principal: Principal, account_id: str, raw: str) -> HelpAnswer:
    """The To address that faxes ``raw`` from this account, or why it cannot be faxed."""
    account: Account = await account_in_scope(store, principal, account_id)
    result = numbers.check(raw.strip(), account.number_policy())
    if isinstance(result, numbers.NumberRefused):
        return HelpAnswer(raw, None, None, None, None, None, result.code.value, result.message)
    return HelpAnswer(
        number=raw,
        to=numbers.fax_address(result.e164, account.realm),
        e164=result.e164,
        international_format=result.international_format,
        category=result.category.value,
        country=result.region,
        refusal_code=None,
        refusal=None,
    )
