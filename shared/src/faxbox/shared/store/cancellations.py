"""Faxes their senders cancelled: written by the portal, obeyed by the transmitter.

``fax_cancellations``: one document per cancelled fax, ``_id`` = the fax id (asking
twice is one insert). The transmitter looks a fax up here before each call and, while a
call is on the line, every few seconds (by ``_id``: cheap on FerretDB too). The portal
also publishes ``FaxCancelRequested``, so a fax waiting for a redial ends at once rather
than when its redial comes due; the document is what makes the cancel stick whatever
order things happen in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from faxbox.shared.store.models import utc_now

Doc = dict[str, Any]

COLLECTION: Final = "fax_cancellations"


class Cancellations:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection: AsyncCollection[Doc] = db[COLLECTION]

    async def request(self, fax_id: str, user_id: str) -> bool:
        """Ask for the fax to be cancelled; False if it was asked before."""
        try:
            await self.collection.insert_one(
                {"_id": fax_id, "user_id": user_id, "requested_at": utc_now()}
            )
        except DuplicateKeyError:
            return False
        return True

    async def requested_at(self, fax_id: str) -> datetime | None:
        doc = await self.collection.find_one({"_id": fax_id}, {"requested_at": 1})
        return None if doc is None else doc["requested_at"]
