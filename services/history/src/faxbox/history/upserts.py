"""Running ``_id`` upserts on FerretDB v1 without deadlocking it.

FerretDB v1.24 keeps every statement's SQLite connection (a pool of 100 per database)
until the whole ``update`` command ends (a ``defer`` inside its loop, msg_update.go), so
one command of ~100 statements, or several at once, deadlocks the server (seen three
times). It runs statements one by one anyway: small commands cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import WriteError

log = logging.getLogger(__name__)

Doc = dict[str, Any]

STATEMENTS_PER_COMMAND = 20
_DUPLICATE_KEY = 11000


async def run_upserts(collection: AsyncCollection[Doc], updates: Sequence[Doc]) -> None:
    """Run ``_id`` upsert statements, a small unordered command at a time.

    The ``update`` command is sent as is rather than through ``bulk_write``: FerretDB's
    reply to a batch with a write error lacks ``nModified``, which PyMongo's bulk API
    cannot parse (KeyError), so the write errors are read from the reply here.
    """
    for start in range(0, len(updates), STATEMENTS_PER_COMMAND):
        await _run_command(collection, list(updates[start : start + STATEMENTS_PER_COMMAND]))


async def _run_command(collection: AsyncCollection[Doc], updates: list[Doc]) -> None:
    for attempt in (1, 2):
        reply = await collection.database.command(
            {"update": collection.name, "updates": updates, "ordered": False}
        )
        errors = reply.get("writeErrors") or []
        if not errors:
            return
        # Two writers upserting the same new _id at once: one insert loses with a
        # duplicate key. The document exists now, so running it again updates it.
        if attempt == 2 or any(e.get("code") != _DUPLICATE_KEY for e in errors):
            raise WriteError(
                f"{len(errors)} of {len(updates)} upserts into {collection.name} failed: "
                f"{errors[0].get('errmsg', errors[0])}",
                errors[0].get("code"),
                errors[0],
            )
        updates = [updates[e["index"]] for e in errors]
        log.info("retrying %d upserts that raced with another writer", len(updates))
