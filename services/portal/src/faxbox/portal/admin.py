"""Faxbox administration on behalf of an account or reseller admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from faxbox.portal.access import account_in_scope, admin_account, faxbox_of, user_in_scope
from faxbox.portal.security import Principal
from faxbox.shared import numbers
from faxbox.shared.store import Account, Faxbox, NotFound, Store, User


class InvalidInput(ValueError):
    """Input an admin typed that cannot be stored; the message says why, in plain words."""


class FaxboxChanges(BaseModel):
    """Settings to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    caller_id: str | None = None
    identity: str | None = None
    header_name: str | None = None
    timezone: str | None = None
    permission_list: list[str] | None = None
    require_authenticated_sender: bool | None = None
    success_notifications: bool | None = None


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
    store: Store, principal: Principal, account_id: str, user_id: str, changes: FaxboxChanges
) -> UserRow:
    _, user = await user_in_scope(store, principal, account_id, user_id)
    fields: dict[str, Any] = changes.model_dump(exclude_unset=True)
    if "caller_id" in fields:
        raw = (fields["caller_id"] or "").strip()
        try:
            fields["caller_id"] = numbers.assignable(raw) if raw else None
        except numbers.NumberRefused as refused:
            raise InvalidInput(f"caller id {raw!r}: {refused.message}") from None
    for name in ("enabled", "require_authenticated_sender", "success_notifications"):
        if name in fields and fields[name] is None:
            del fields[name]
    current = await faxbox_of(store, user)
    # Validate the whole result before creating anything.
    base = current.model_dump() if current else {"account_id": account_id, "owner_user_id": user.id}
    try:
        Faxbox.model_validate({**base, **fields})
    except ValidationError as exc:
        raise InvalidInput(explain(exc)) from None
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
    await store.assign_number(box.id, number)
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
