"""``faxbox check-email FILE.eml``: the decision the validator would take, as one JSON object.

A dry run against the configured database (``FAXBOX_MONGO_URL``, ``FAXBOX_MONGO_DB``):
nothing is published, stored or counted (daily limits are only read). Admins use it to
answer "why wasn't my fax sent?"::

    {"decision": "rejected", "number": "+12125551234", "numbers": ["+12125551234"],
     "pages": 2, "attachment": "scan.pdf", "reasons": [{"code": "...", "message": "..."}]}

``numbers`` is every number this copy would be faxed to (one fax each), ``number`` the
first. ``number``, ``pages`` and ``attachment`` are null (``numbers`` empty) when the
mail got no far enough to know them. Exit status: 0 when a decision was printed, 2 when
the file cannot be read, 3 when the database cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faxbox.validator.service import Settings

# The rest is imported inside the functions: the rendering worker starts by importing
# the parent's main module, which is this one under ``python -m``, and the service's
# imports would cost it about a second.

EXIT_INPUT = 2
EXIT_UNAVAILABLE = 3


async def check(raw: bytes, settings: Settings) -> dict[str, Any]:
    from faxbox.shared.store import Store
    from faxbox.validator.adapters import MongoDirectory, MongoPageCounters
    from faxbox.validator.decision import evaluate
    from faxbox.validator.mime import UndecodableMail
    from faxbox.validator.renderer import ProcessRenderer
    from faxbox.validator.trust import warn_without_trusted_servers

    store = await Store.connect(settings)
    try:
        # On stderr (logging's last resort), beside the decision on stdout.
        await warn_without_trusted_servers(store, settings.validator_authserv_ids)
        try:
            decision = await evaluate(
                raw,
                directory=MongoDirectory(store),
                counters=MongoPageCounters(store),
                renderer=ProcessRenderer(
                    settings.validator_render_timeout_s,
                    1,
                    settings.validator_max_page_length_mm,
                    settings.validator_render_memory_mb * 2**20,
                ),
                limits=settings.limits(),
                day=datetime.now(UTC).date(),
                reserve_for=None,
            )
        except UndecodableMail as exc:
            return {
                "decision": "ignored",
                "number": None,
                "numbers": [],
                "pages": None,
                "attachment": None,
                "reasons": [{"code": "undecodable_mail", "message": exc.reason}],
            }
        return decision.summary()
    finally:
        await store.close()


def build_parser(prog: str = "faxbox check-email") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Print the decision the validator would take on an email."
    )
    parser.add_argument("file", help="the email, as an .eml file (RFC 5322)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pymongo.errors import PyMongoError

    from faxbox.validator.service import Settings

    args = build_parser().parse_args(argv)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"faxbox check-email: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_INPUT
    try:
        result = asyncio.run(check(raw, Settings()))
    except PyMongoError as exc:
        print(f"faxbox check-email: database unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
