"""The ``faxbox`` command line: its groups, commands and options."""

from __future__ import annotations

import argparse

from faxbox.admin.commands import (
    account_create,
    account_list,
    account_update,
    carrier_add,
    carrier_list,
    carrier_seal_passwords,
    carrier_set_password,
    carrier_update,
    faxbox_assign,
    faxbox_disable,
    faxbox_enable,
    faxbox_show,
    faxbox_unassign,
    history_apply_retention,
    history_drop_month,
    number_add,
    number_list,
    number_remove,
    show_help,
    user_create,
    user_list,
    user_set_alternate,
    user_set_page_limit,
    user_set_password,
)
from faxbox.admin.webhook_commands import add_parsers as add_webhook_parsers
from faxbox.shared.store import Role, SenderAuth


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(f"--{name}", dest=name.replace("-", "_"), action="store_true", default=None)
    parser.add_argument(
        f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=help_text
    )


def _carrier_sip(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    """How we reach the carrier: defaults when adding, unchanged when not given to update."""
    parser.add_argument(
        "--sip-transport", choices=["udp", "tcp", "tls"], default="udp" if adding else None
    )
    parser.add_argument("--sip-domain", help="its SIP domain (From, address of record)")
    parser.add_argument("--outbound-proxy", help="SIP URI every call goes through (an SBC)")
    parser.add_argument(
        "--register-expires", type=int, default=600 if adding else None, help="seconds"
    )
    if adding:
        parser.add_argument("--register", action="store_true", help="register our contact")
        parser.add_argument("--t38-in-invite", action="store_true", help="offer T.38 at once")
    else:
        _bool_flag(parser, "register", "stop registering our contact with it")
        _bool_flag(parser, "t38-in-invite", "offer only G.711 in the INVITE")


def _carrier_edge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sip-allow",
        action="append",
        metavar="CIDR",
        help="an address or network the carrier's calls come from (repeat; default: the "
        "addresses of --sip-host and --outbound-proxy); calls from anywhere else are refused",
    )
    parser.add_argument(
        "--inbound-username",
        help="challenge the carrier's calls for this user (password: set-password --inbound)",
    )


def _account_policy(parser: argparse.ArgumentParser, country_default: str | None) -> None:
    parser.add_argument(
        "--country",
        default=country_default,
        help="home country, ISO code (US); new accounts may fax only there by default "
        "(a North American home: every +1 country)",
    )
    parser.add_argument(
        "--allow-countries",
        help="comma-separated ISO codes the account may fax, e.g. US,CA,GB ('*': every country)",
    )
    parser.add_argument(
        "--block",
        action="append",
        help="number category to block (repeat; default premium_rate and shared_cost)",
    )
    parser.add_argument(
        "--daily-page-limit",
        help="pages a UTC day for the whole account: N, 0 for no cap, or default",
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
    _account_policy(p, country_default="US")
    p.set_defaults(command=account_create)
    account.add_parser("list").set_defaults(command=account_list)
    p = account.add_parser("update", help="change an account's destinations and page cap")
    p.add_argument("--realm", required=True)
    p.add_argument("--name")
    p.add_argument("--months-to-keep", type=int)
    _account_policy(p, country_default=None)
    p.set_defaults(command=account_update)

    number = groups.add_parser("number", help="an account's number inventory").add_subparsers(
        required=True
    )
    for name, command, text in (
        ("add", number_add, "add numbers to the account's inventory (platform/reseller admin)"),
        ("remove", number_remove, "release unassigned numbers from the account"),
    ):
        p = number.add_parser(name, help=text)
        p.add_argument("--realm", required=True)
        p.add_argument("--number", action="append", required=True, help="DID or extension; repeat")
        p.set_defaults(command=command)
    p = number.add_parser("list", help="the account's numbers and where each is assigned")
    p.add_argument("--realm", required=True)
    p.set_defaults(command=number_list)

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
    p = user.add_parser("set-page-limit", help="the user's own daily page cap")
    p.add_argument("--email", required=True)
    p.add_argument("--pages", required=True, help="N pages a UTC day, 0 for no cap, or default")
    p.set_defaults(command=user_set_page_limit)

    faxbox = groups.add_parser("faxbox", help="faxboxes").add_subparsers(required=True)
    p = faxbox.add_parser("enable", help="create or enable a user's faxbox, with settings")
    p.add_argument("--user", required=True, help="owner's email")
    p.add_argument("--number", action="append", help="DID (E.164) or extension; repeat")
    p.add_argument("--caller-id")
    p.add_argument("--identity", help="fax identity (TSI/CSI), at most 20 characters")
    p.add_argument("--header-name")
    p.add_argument(
        "--header-format",
        help="the page header line, like HylaFAX's TagLineFormat: strftime codes, %%%%s name, "
        "%%%%n number, %%%%p/%%%%t page of pages, | between fields",
    )
    p.add_argument("--timezone")
    p.add_argument("--permit", action="append", help="allowed sender address or domain")
    p.add_argument("--extra-recipient", action="append")
    p.add_argument("--resolution", choices=["fine", "standard"])
    p.add_argument("--max-recipients", type=int, help="fax numbers one email may name (10)")
    p.add_argument(
        "--route-flag", action="append", help="lets its faxes use carriers requiring it; repeat"
    )
    p.add_argument(
        "--sender-auth",
        choices=[a.value for a in SenderAuth],
        help="required (default): fax only mail a trusted mail server proved came from the "
        "sender; off: believe the From header (anyone can forge it)",
    )
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
    p.add_argument(
        "--sip-password-stdin",
        action="store_true",
        help="read the SIP password from stdin (sealed with FAXBOX_SECRET_KEY)",
    )
    _carrier_sip(p, adding=True)
    _carrier_edge(p)
    p.set_defaults(command=carrier_add)
    carrier.add_parser("list").set_defaults(command=carrier_list)
    p = carrier.add_parser("update", help="how we reach a carrier, and where its calls come from")
    p.add_argument("--name", required=True)
    _carrier_sip(p, adding=False)
    _carrier_edge(p)
    p.set_defaults(command=carrier_update)
    p = carrier.add_parser(
        "set-password", help="set (from stdin) or clear a carrier's SIP password"
    )
    p.add_argument("--name", required=True)
    p.add_argument(
        "--inbound",
        action="store_true",
        help="the password the carrier answers our challenge with (see --inbound-username)",
    )
    p.add_argument("--clear", action="store_true")
    p.set_defaults(command=carrier_set_password)
    carrier.add_parser(
        "seal-passwords", help="seal passwords stored before FAXBOX_SECRET_KEY was used"
    ).set_defaults(command=carrier_seal_passwords)

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

    add_webhook_parsers(groups)

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
