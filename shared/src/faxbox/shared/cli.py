"""``faxbox``: the administration command line.

Every command validates all of its input before it writes anything; a refusal is one
line on stderr and a non-zero exit (2 for bad input, 1 for a conflict with what is
stored, 3 when the database cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pymongo.errors import PyMongoError

from faxbox.shared import numbers, passwords
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import (
    Account,
    Carrier,
    Faxbox,
    NotFound,
    Role,
    Store,
    StoreError,
    User,
    apply_retention,
    drop_month,
)
from faxbox.shared.store.monthly import parse_month, validate_account_id

ModelT = TypeVar("ModelT", bound=BaseModel)

EXIT_INPUT = 2
EXIT_CONFLICT = 1
EXIT_UNAVAILABLE = 3

MAX_EXTENSION_DIGITS = numbers.MAX_EXTENSION_DIGITS


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


# --- parser -------------------------------------------------------------------------------

Command = Callable[[Store, argparse.Namespace], Awaitable[Any]]


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None)
    parser.add_argument(
        f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=help_text
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faxbox", description="Faxbox administration")
    parser.add_argument("--json", action="store_true", help="print JSON (default: indented)")
    groups = parser.add_subparsers(dest="group", required=True)

    account = groups.add_parser("account", help="accounts").add_subparsers(required=True)
    p = account.add_parser("create", help="create an account with its realm")
    p.add_argument("--name", required=True)
    p.add_argument("--realm", required=True, help="mail domain, e.g. acme.fax.example.com")
    p.add_argument("--reseller")
    p.add_argument("--months-to-keep", type=int)
    p.add_argument("--allowed-country", action="append", help="ISO code; repeat (default all)")
    p.add_argument("--block", action="append", help="number category to block (repeat)")
    p.set_defaults(command=account_create)
    account.add_parser("list").set_defaults(command=account_list)

    user = groups.add_parser("user", help="users").add_subparsers(required=True)
    p = user.add_parser("create")
    p.add_argument("--realm", required=True, help="the account's realm")
    p.add_argument("--email", required=True)
    p.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    p.add_argument("--alternate-email")
    p.set_defaults(command=user_create)
    p = user.add_parser("list")
    p.add_argument("--realm", required=True)
    p.set_defaults(command=user_list)
    p = user.add_parser("set-password", help="set the portal password (read from stdin)")
    p.add_argument("--email", required=True)
    p.set_defaults(command=user_set_password)
    p = user.add_parser("set-alternate", help="set or clear the alternate notification address")
    p.add_argument("--email", required=True)
    p.add_argument("--alternate-email", help="omit to clear")
    p.set_defaults(command=user_set_alternate)

    faxbox = groups.add_parser("faxbox", help="faxboxes").add_subparsers(required=True)
    p = faxbox.add_parser("enable", help="create or enable a user's faxbox, with settings")
    p.add_argument("--user", required=True, help="owner's email")
    p.add_argument("--number", action="append", help="DID (E.164) or extension; repeat")
    p.add_argument("--caller-id")
    p.add_argument("--identity", help="fax identity (TSI/CSI), at most 20 characters")
    p.add_argument("--header-name")
    p.add_argument("--timezone")
    p.add_argument("--permit", action="append", help="allowed sender address or domain")
    p.add_argument("--extra-recipient", action="append")
    p.add_argument("--resolution", choices=["fine", "standard"])
    _bool_flag(p, "require-authenticated-sender", "trust DMARC/SPF/DKIM results")
    _bool_flag(p, "success-mails", "mail the sender when a fax was sent")
    p.set_defaults(command=faxbox_enable)
    for name, command in (("disable", faxbox_disable), ("show", faxbox_show)):
        p = faxbox.add_parser(name)
        p.add_argument("--user", required=True)
        p.set_defaults(command=command)
    p = faxbox.add_parser("assign", help="assign a number to the user's faxbox")
    p.add_argument("--user", required=True)
    p.add_argument("--number", required=True)
    p.set_defaults(command=faxbox_assign)
    p = faxbox.add_parser("unassign", help="remove a number from whatever faxbox has it")
    p.add_argument("--number", required=True)
    p.set_defaults(command=faxbox_unassign)

    carrier = groups.add_parser("carrier", help="carriers").add_subparsers(required=True)
    p = carrier.add_parser("add")
    p.add_argument("--name", required=True)
    p.add_argument("--flag", action="append", help="e.g. fax; repeat")
    p.add_argument("--require-flag", action="append")
    p.add_argument("--priority", type=int, default=100)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--sip-host")
    p.add_argument("--sip-port", type=int)
    p.add_argument("--sip-username")
    p.add_argument("--sip-password")
    p.set_defaults(command=carrier_add)
    carrier.add_parser("list").set_defaults(command=carrier_list)

    history = groups.add_parser("history", help="fax history retention").add_subparsers(
        required=True
    )
    p = history.add_parser("drop-month", help="drop one month of an account's faxes and documents")
    p.add_argument("--account", required=True, help="account id")
    p.add_argument("--month", required=True, help="YYYYMM")
    p.set_defaults(command=history_drop_month)
    p = history.add_parser("apply-retention", help="drop the months older than months-to-keep")
    p.add_argument("--account", help="only this account id (default: every account)")
    p.set_defaults(command=history_apply_retention)

    p = groups.add_parser("show-help", help="the To address to fax NUMBER, or why not")
    p.add_argument("number")
    p.add_argument("--realm", required=True)
    p.set_defaults(command=show_help)

    p = groups.add_parser("check-email", help="the validator's decision on an email (dry run)")
    p.add_argument("file", help="the email, as an .eml file")

    p = groups.add_parser(
        "demo",
        help="fax a PDF from demo user A to B and show each step; `demo seed` creates the tenant",
    )
    p.add_argument("action", nargs="?", choices=["run", "seed"], default="run")
    return parser


def _check_email(args: argparse.Namespace) -> int:
    # The validator depends on shared, never the other way: imported only when asked for.
    try:
        from faxbox.validator import check_email
    except ImportError:
        print("faxbox: check-email needs the validator (package faxbox-validator)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return check_email.main([args.file])


async def _run(command: Command, args: argparse.Namespace) -> Any:
    store = await Store.connect(MongoSettings())
    try:
        await store.ensure_indexes()
        return await command(store, args)
    finally:
        await store.close()


def _demo(args: argparse.Namespace) -> int:
    try:
        from faxbox.demo import cli as demo_cli
    except ImportError:
        print("faxbox: demo needs the package faxbox-demo", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return demo_cli.main(args.action)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "check-email":
        return _check_email(args)
    if args.group == "demo":
        return _demo(args)
    try:
        result = asyncio.run(_run(args.command, args))
    except CliError as exc:
        print(f"faxbox: {exc}", file=sys.stderr)
        return exc.exit_code
    except NotFound as exc:
        print(f"faxbox: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StoreError as exc:
        print(f"faxbox: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    except PyMongoError as exc:
        print(f"faxbox: database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.group == "show-help" and not args.json:
        print(result["to"])
    else:
        print(json.dumps(result, indent=None if args.json else 2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
