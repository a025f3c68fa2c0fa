"""What each ``faxbox`` command does to the store, and the refusals it can give.

Every command validates all of its input before it writes anything; a refusal is a
:class:`CliError` with its exit status (2 for bad input, 1 for a conflict with what is
stored).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from faxbox.shared import numbers, passwords
from faxbox.shared.store import (
    Account,
    Carrier,
    Faxbox,
    Role,
    Store,
    User,
    apply_retention,
    drop_month,
)
from faxbox.shared.store.monthly import parse_month, validate_account_id

ModelT = TypeVar("ModelT", bound=BaseModel)

EXIT_INPUT = 2
EXIT_CONFLICT = 1

Command = Callable[[Store, argparse.Namespace], Awaitable[Any]]


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def assignable_number(raw: str) -> str:
    """An inbound number for a faxbox: E.164 (normalized) or a short extension."""
    try:
        return numbers.assignable(raw)
    except numbers.NumberRefused as refused:
        raise CliError(f"{raw!r} cannot be assigned: {refused.message}") from None


# --- commands -----------------------------------------------------------------------------


async def account_create(store: Store, args: argparse.Namespace) -> Any:
    account = _model(
        Account,
        name=args.name,
        realm=args.realm,
        reseller_id=args.reseller,
        months_to_keep=args.months_to_keep,
        allowed_countries=args.allowed_country or [],
        blocked_categories=args.block if args.block is not None else ["premium_rate"],
    )
    return (await store.create_account(account)).model_dump(mode="json")


async def account_list(store: Store, args: argparse.Namespace) -> Any:
    return [a.model_dump(mode="json") for a in await store.list_accounts()]


async def user_create(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    user = _model(
        User,
        account_id=account.id,
        email=args.email,
        role=Role(args.role),
        alternate_email=args.alternate_email,
    )
    return _public_user(await store.create_user(user))


async def user_list(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    return [_public_user(u) for u in await store.list_users(account.id)]


async def user_set_password(store: Store, args: argparse.Namespace) -> Any:
    """Set a user's portal password, read from stdin so it never shows in `ps` or history."""
    user = await _user(store, args.email)
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        hashed = passwords.hash_password(password)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return _public_user(await store.set_password_hash(user.id, hashed))


async def user_set_alternate(store: Store, args: argparse.Namespace) -> Any:
    user = await _user(store, args.email)
    _model(User, **(user.model_dump() | {"alternate_email": args.alternate_email}))
    return _public_user(await store.set_alternate_email(user.id, args.alternate_email))


def _faxbox_settings(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "caller_id": args.caller_id,
        "identity": args.identity,
        "header_name": args.header_name,
        "timezone": args.timezone,
        "permission_list": args.permit,
        "extra_recipients": args.extra_recipient,
        "resolution": args.resolution,
        "max_recipients": args.max_recipients,
    }
    settings = {k: v for k, v in given.items() if v is not None}
    if args.caller_id is not None:
        settings["caller_id"] = assignable_number(args.caller_id)
    if args.require_authenticated_sender is not None:
        settings["require_authenticated_sender"] = args.require_authenticated_sender
    if args.success_mails is not None:
        settings["success_notifications"] = args.success_mails
    return settings


async def faxbox_enable(store: Store, args: argparse.Namespace) -> Any:
    """Create or re-enable the user's faxbox, apply settings, assign numbers: all or nothing."""
    user = await _user(store, args.user)
    wanted = list(dict.fromkeys(assignable_number(n) for n in args.number or []))
    settings = _faxbox_settings(args)
    existing = await store.list_faxboxes(owner_user_id=user.id)
    base = existing[0] if existing else None
    # Validate the complete result before any write.
    candidate = _model(
        Faxbox,
        **(
            (base.model_dump(exclude={"numbers"}) if base else {})
            | {"account_id": user.account_id, "owner_user_id": user.id, "enabled": True}
            | settings
        ),
    )
    for number in wanted:
        holder = await store.find_number(number)
        if holder is not None and (base is None or holder.faxbox_id != base.id):
            raise CliError(
                f"number {number} is already assigned to faxbox {holder.faxbox_id}", EXIT_CONFLICT
            )

    created = base is None
    faxbox = await store.create_faxbox(candidate) if created else base
    assert faxbox is not None
    newly_assigned: list[str] = []
    try:
        for number in wanted:
            if number not in faxbox.numbers:
                await store.assign_number(faxbox.id, number)
                newly_assigned.append(number)
        if not created:
            faxbox = await store.update_faxbox(faxbox.id, **settings, enabled=True)
    except BaseException:
        # Lost a race for a number (or the database went away): undo what we did.
        for number in newly_assigned:
            await store.unassign_number(number, faxbox_id=faxbox.id)
        if created:
            await store.delete_faxbox(faxbox.id)
        raise
    return (await store.get_faxbox(faxbox.id)).model_dump(mode="json")


async def faxbox_disable(store: Store, args: argparse.Namespace) -> Any:
    faxbox = await _faxbox_of(store, args.user)
    return (await store.disable_faxbox(faxbox.id)).model_dump(mode="json")


async def faxbox_assign(store: Store, args: argparse.Namespace) -> Any:
    number = assignable_number(args.number)
    faxbox = await _faxbox_of(store, args.user)
    await store.assign_number(faxbox.id, number)
    return (await store.get_faxbox(faxbox.id)).model_dump(mode="json")


async def faxbox_unassign(store: Store, args: argparse.Namespace) -> Any:
    number = assignable_number(args.number)
    await store.unassign_number(number)
    return {"unassigned": number}


async def faxbox_show(store: Store, args: argparse.Namespace) -> Any:
    return (await _faxbox_of(store, args.user)).model_dump(mode="json")


async def carrier_add(store: Store, args: argparse.Namespace) -> Any:
    carrier = _model(
        Carrier,
        name=args.name,
        flags=args.flag or [],
        require_flags=args.require_flag or [],
        priority=args.priority,
        channel_cap=args.channels,
        sip_host=args.sip_host,
        sip_port=args.sip_port,
        sip_username=args.sip_username,
        sip_password=args.sip_password,
    )
    return (await store.add_carrier(carrier)).model_dump(mode="json", exclude={"sip_password"})


async def carrier_list(store: Store, args: argparse.Namespace) -> Any:
    return [
        c.model_dump(mode="json", exclude={"sip_password"}) for c in await store.list_carriers()
    ]


async def show_help(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    try:
        number = numbers.normalize(args.number, account.number_policy())
    except numbers.NumberRefused as refused:
        raise CliError(f"{args.number!r} cannot be faxed: {refused.message}") from None
    return {
        "to": numbers.fax_address(number.e164, account.realm),
        "number": number.e164,
        "country": number.region,
        "category": number.category.value,
        "international_format": number.international_format,
    }


async def history_drop_month(store: Store, args: argparse.Namespace) -> Any:
    try:
        account_id, month = validate_account_id(args.account), parse_month(args.month)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    await drop_month(store, account_id, month)
    return {"dropped": [{"account": account_id, "month": month}]}


async def history_apply_retention(store: Store, args: argparse.Namespace) -> Any:
    dropped = await apply_retention(store, account_id=args.account)
    return {"dropped": [{"account": a, "month": m} for a, m in dropped]}


# --- helpers ------------------------------------------------------------------------------


def _model(model: type[ModelT], **fields: Any) -> ModelT:
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid {model.__name__.lower()}: {problems}") from None


async def _user(store: Store, email: str) -> User:
    user = await store.find_user_by_email(email)
    if user is None:
        raise CliError(f"no user with email {email}")
    return user


async def _faxbox_of(store: Store, email: str) -> Faxbox:
    user = await _user(store, email)
    boxes = await store.list_faxboxes(owner_user_id=user.id)
    if not boxes:
        raise CliError(f"{email} has no faxbox; create one with `faxbox faxbox enable`")
    return boxes[0]


def _public_user(user: User) -> dict[str, Any]:
    return user.model_dump(mode="json", exclude={"password_hash"})
