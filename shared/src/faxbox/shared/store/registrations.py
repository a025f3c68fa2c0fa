"""Where our SIP registrations stand, one document per carrier and registering process.

The inbound receiver registers with every carrier flagged ``sip_register`` and writes each
change of a registration here (``_id`` = ``<carrier id>|<instance>``: every replica owns
its own documents, so plain upserts never race); the portal's dashboard reads them all.
A document whose ``expires_at`` has passed belongs to a replica that stopped refreshing
(it died): the dashboard shows it as expired. ``forget`` removes a replica's document
when it stops registering with that carrier.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.collection import AsyncCollection

Doc = dict[str, Any]

COLLECTION = "sip_registrations"


class SipRegistrationRecord(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: str = Field(alias="_id")
    carrier_id: str
    carrier_name: str
    instance: str
    aor: str
    registrar: str
    state: str  # registering | registered | failed | unregistered
    contact: str = ""
    expires_at: datetime | None = None
    last_status: int | None = None
    last_reason: str = ""
    failures: int = 0
    updated_at: datetime

    def expired(self, now: datetime) -> bool:
        return self.state == "registered" and self.expires_at is not None and self.expires_at < now


def record_id(carrier_id: str, instance: str) -> str:
    return f"{carrier_id}|{instance}"


class SipRegistrations:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    async def record(self, record: SipRegistrationRecord) -> None:
        doc = record.model_dump(by_alias=True)
        await self.collection.replace_one({"_id": record.id}, doc, upsert=True)

    async def forget(self, carrier_id: str, instance: str) -> None:
        await self.collection.delete_one({"_id": record_id(carrier_id, instance)})

    async def all(self) -> list[SipRegistrationRecord]:
        cursor = self.collection.find({}).sort([("carrier_name", 1), ("instance", 1)])
        return [SipRegistrationRecord.model_validate(doc) async for doc in cursor]
