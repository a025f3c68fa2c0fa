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
from collections.abc import Sequence
from typing import Any

from pymongo.errors import PyMongoError

from faxbox.admin.commands import (
    EXIT_CONFLICT,
    EXIT_INPUT,
    CliError,
    Command,
)
from faxbox.admin.parser import build_parser
from faxbox.shared.settings import MongoSettings
from faxbox.shared.store import NotFound, Store, StoreError
from faxbox.validator import check_email

EXIT_UNAVAILABLE = 3


async def _run(command: Command, args: argparse.Namespace) -> Any:
    store = await Store.connect(MongoSettings())
    try:
        await store.ensure_indexes()
        return await command(store, args)
    finally:
        await store.close()


def _demo(args: argparse.Namespace) -> int:
    # Imported when asked for: the demo's imports (pypdf, aio-pika) cost every other
    # command about a second.
    from faxbox.demo import cli as demo_cli

    return demo_cli.main(args.action)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "check-email":
        return check_email.main([args.file])
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
