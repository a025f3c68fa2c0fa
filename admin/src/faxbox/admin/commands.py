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
from faxbox.shared.secretbox import SecretBox, SecretKeyMissing, SecretSettings, is_sealed
from faxbox.shared.settings import OwnershipSettings
from faxbox.shared.store import (
    Account,
    CallerIdNotOwned,
    Carrier,
    Faxbox,
    NumberHeldByAnotherAccount,
    NumberNotInInventory,
    Role,
    Store,
    User,
    apply_retention,
    drop_month,
)
from faxbox.shared.store.models import PasswordField
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


def _countries(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [c for c in (part.strip() for part in raw.split(",")) if c]


def _page_limit(raw: str | None) -> tuple[bool, int | None]:
    """(given, value): ``default`` is None (the platform's cap), 0 no cap, N pages."""
    if raw is None:
        return False, None
    if raw.strip().lower() == "default":
        return True, None
    try:
        value = int(raw)
    except ValueError:
        raise CliError(f"page limit {raw!r}: give a number of pages, 0 or default") from None
    if value < 0:
        raise CliError(f"page limit {raw!r}: a limit cannot be negative")
    return True, value


def _account_policy(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.country is not None:
        fields["country"] = args.country
    countries = _countries(args.allow_countries)
    if countries is not None:
        fields["allowed_countries"] = countries
    if args.block is not None:
        fields["blocked_categories"] = args.block
    given, limit = _page_limit(args.daily_page_limit)
    if given:
        fields["daily_page_limit"] = limit
    return fields


async def account_create(store: Store, args: argparse.Namespace) -> Any:
    account = model_of(
        Account,
        name=args.name,
        realm=args.realm,
        reseller_id=args.reseller,
        months_to_keep=args.months_to_keep,
        **_account_policy(args),
    )
    return (await store.create_account(account)).model_dump(mode="json")


async def account_list(store: Store, args: argparse.Namespace) -> Any:
    return [a.model_dump(mode="json") for a in await store.list_accounts()]


async def account_update(store: Store, args: argparse.Namespace) -> Any:
    """Widen or narrow an account's destinations, change its page cap (platform admin)."""
    account = await store.get_account_by_realm(args.realm)
    changes = _account_policy(args)
    if args.name is not None:
        changes["name"] = args.name
    if args.months_to_keep is not None:
        changes["months_to_keep"] = args.months_to_keep
    if "country" in changes and "allowed_countries" not in changes:
        # A new home with the old home's defaults would keep faxing the old country.
        changes["allowed_countries"] = []
    if not changes:
        raise CliError("nothing to change: give --allow-countries, --country, --block, ...")
    model_of(Account, **(account.model_dump() | changes))
    return (await store.update_account(account.id, **changes)).model_dump(mode="json")


# --- the number inventory -------------------------------------------------------------------


async def number_add(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    wanted = list(dict.fromkeys(assignable_number(n) for n in args.number))
    for number in wanted:  # all or nothing: check every number before adding any
        held = await store.find_account_number(number)
        assigned = await store.find_number(number)
        if (held and held.account_id != account.id) or (
            assigned and assigned.account_id != account.id
        ):
            raise CliError(f"number {number} belongs to another account", EXIT_CONFLICT)
    added = []
    for number in wanted:
        try:
            added.append((await store.add_account_number(account.id, number)).number)
        except NumberHeldByAnotherAccount as exc:  # lost a race since the check
            raise CliError(str(exc), EXIT_CONFLICT) from None
    return {"account": account.realm, "added": added}


async def number_remove(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    wanted = list(dict.fromkeys(assignable_number(n) for n in args.number))
    for number in wanted:
        held = await store.find_account_number(number)
        if held is None or held.account_id != account.id:
            raise CliError(f"number {number} is not in the inventory of {account.realm}")
        assigned = await store.find_number(number)
        if assigned is not None:
            raise CliError(
                f"number {number} is assigned to faxbox {assigned.faxbox_id}; unassign it first",
                EXIT_CONFLICT,
            )
    for number in wanted:
        await store.remove_account_number(account.id, number)
    return {"account": account.realm, "removed": wanted}


async def number_list(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    return [
        {"number": entry.number, "faxbox_id": faxbox_id}
        for entry, faxbox_id in await store.list_account_numbers(account.id)
    ]


async def user_create(store: Store, args: argparse.Namespace) -> Any:
    account = await store.get_account_by_realm(args.realm)
    user = model_of(
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
    model_of(User, **(user.model_dump() | {"alternate_email": args.alternate_email}))
    return _public_user(await store.set_alternate_email(user.id, args.alternate_email))


async def user_set_page_limit(store: Store, args: argparse.Namespace) -> Any:
    user = await _user(store, args.email)
    _, limit = _page_limit(args.pages)
    return _public_user(await store.set_daily_page_limit(user.id, limit))


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
        "route_flags": args.route_flag,
        "header_format": args.header_format,
    }
    settings = {k: v for k, v in given.items() if v is not None}
    if args.caller_id is not None:
        settings["caller_id"] = assignable_number(args.caller_id)
    if args.sender_auth is not None:
        settings["sender_auth"] = args.sender_auth
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
    candidate = model_of(
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
        if holder is None:
            await _in_inventory(store, user.account_id, number)
    if "caller_id" in settings:
        owned = [*(base.numbers if base else []), *wanted]
        await _owned_caller_id(store, candidate, settings["caller_id"], owned)

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
    faxbox = await faxbox_of_user(store, args.user)
    return (await store.disable_faxbox(faxbox.id)).model_dump(mode="json")


async def faxbox_assign(store: Store, args: argparse.Namespace) -> Any:
    number = assignable_number(args.number)
    faxbox = await faxbox_of_user(store, args.user)
    try:
        await store.assign_number(faxbox.id, number)
    except NumberNotInInventory as exc:
        raise CliError(str(exc)) from None
    return (await store.get_faxbox(faxbox.id)).model_dump(mode="json")


async def faxbox_unassign(store: Store, args: argparse.Namespace) -> Any:
    number = assignable_number(args.number)
    await store.unassign_number(number)
    return {"unassigned": number}


async def faxbox_show(store: Store, args: argparse.Namespace) -> Any:
    return (await faxbox_of_user(store, args.user)).model_dump(mode="json")


def _secret_box() -> SecretBox | None:
    try:
        return SecretSettings().box()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _stdin_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password on stdin")
    return password


_PASSWORDS: tuple[PasswordField, ...] = ("sip_password", "inbound_password")


def _public_carrier(carrier: Carrier) -> dict[str, Any]:
    """The carrier as shown: each password only as whether it is set, and sealed."""
    shown = carrier.model_dump(mode="json", exclude={str(f) for f in _PASSWORDS})
    for field in _PASSWORDS:
        stored = getattr(carrier, field)
        shown[field] = None if stored is None else "sealed" if is_sealed(stored) else "plain"
    return shown


async def carrier_add(store: Store, args: argparse.Namespace) -> Any:
    carrier = model_of(
        Carrier,
        name=args.name,
        flags=args.flag or [],
        require_flags=args.require_flag or [],
        priority=args.priority,
        channel_cap=args.channels,
        sip_host=args.sip_host,
        sip_port=args.sip_port,
        sip_username=args.sip_username,
        sip_allow=args.sip_allow or [],
        inbound_username=args.inbound_username,
        sip_transport=args.sip_transport,
        sip_domain=args.sip_domain,
        outbound_proxy=args.outbound_proxy,
        sip_register=args.register,
        register_expires_s=args.register_expires,
        t38_in_invite=args.t38_in_invite,
    )
    if args.sip_password_stdin:
        carrier = _sealed(carrier, _stdin_password())
    return _public_carrier(await store.add_carrier(carrier))


def _sealed(carrier: Carrier, password: str | None, field: str = "sip_password") -> Carrier:
    try:
        return carrier.with_password(
            password,
            _secret_box(),
            "inbound_password" if field == "inbound_password" else "sip_password",
        )
    except SecretKeyMissing as exc:
        raise CliError(str(exc)) from None


async def carrier_update(store: Store, args: argparse.Namespace) -> Any:
    carrier = await store.get_carrier_by_name(args.name)
    changes: dict[str, Any] = {
        field: value
        for field, value in (
            ("sip_transport", args.sip_transport),
            ("register_expires_s", args.register_expires),
            ("sip_register", args.register),
            ("t38_in_invite", args.t38_in_invite),
            ("sip_allow", args.sip_allow),
        )
        if value is not None
    }
    # An empty value clears these ("--outbound-proxy ''").
    for field, value in (
        ("sip_domain", args.sip_domain),
        ("outbound_proxy", args.outbound_proxy),
        ("inbound_username", args.inbound_username),
    ):
        if value is not None:
            changes[field] = value or None
    if not changes:
        raise CliError("nothing to change: give the settings to change (see --help)")
    model_of(Carrier, **(carrier.model_dump() | changes))
    return _public_carrier(await store.update_carrier(carrier, **changes))


async def carrier_list(store: Store, args: argparse.Namespace) -> Any:
    return [_public_carrier(c) for c in await store.list_carriers()]


async def carrier_set_password(store: Store, args: argparse.Namespace) -> Any:
    carrier = await store.get_carrier_by_name(args.name)
    field: PasswordField = "inbound_password" if args.inbound else "sip_password"
    sealed = _sealed(carrier, None if args.clear else _stdin_password(), field)
    changes = {field: getattr(sealed, field)}
    return _public_carrier(await store.update_carrier(carrier, **changes))


async def carrier_seal_passwords(store: Store, args: argparse.Namespace) -> Any:
    """Seal every password stored in clear (before FAXBOX_SECRET_KEY was used)."""
    sealed = []
    for carrier in await store.list_carriers():
        for field in _PASSWORDS:
            stored = getattr(carrier, field)
            if stored is not None and not is_sealed(stored):
                updated = _sealed(carrier, stored, field)
                carrier = await store.update_carrier(carrier, **{field: getattr(updated, field)})
                sealed.append(f"{carrier.name} {field}")
    return {"sealed": sealed}


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


def model_of(model: type[ModelT], **fields: Any) -> ModelT:
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


async def _in_inventory(store: Store, account_id: str, number: str) -> None:
    held = await store.find_account_number(number)
    if held is None or held.account_id != account_id:
        account = await store.get_account(account_id)
        raise CliError(str(NumberNotInInventory(number, account.realm)))


async def _owned_caller_id(store: Store, faxbox: Faxbox, number: str, also: list[str]) -> None:
    try:
        await store.check_caller_id(faxbox, number, OwnershipSettings().caller_id_scope, also=also)
    except CallerIdNotOwned as exc:
        raise CliError(str(exc)) from None


async def faxbox_of_user(store: Store, email: str) -> Faxbox:
    user = await _user(store, email)
    boxes = await store.list_faxboxes(owner_user_id=user.id)
    if not boxes:
        raise CliError(f"{email} has no faxbox; create one with `faxbox faxbox enable`")
    return boxes[0]


def _public_user(user: User) -> dict[str, Any]:
    return user.model_dump(mode="json", exclude={"password_hash"})
