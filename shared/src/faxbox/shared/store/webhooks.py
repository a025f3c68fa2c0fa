"""Webhooks (where an account wants to hear about its faxes) and their delivery logs.

``webhooks``: one document per webhook (``whk_...``), with the account, optionally one
faxbox it is limited to, the URL, an optional failover URL, the events it wants and how
many requests may be open to its URL at once. The portal and the CLI write them (after
``faxbox.shared.urlguard`` accepted both URLs); the webhooks service reads them.

The delivery log of a webhook lives in one collection per month
(``webhook_log_<webhook id>_<YYYYMM>``), one document per event told (``_id`` = the
event id, so telling an event twice is one insert that fails): its body as it was
first signed and sent, every attempt (time, URL, HTTP status or error, how long it
took, whether it was a replay) and where the delivery stands. Per webhook and month so
that a portal page reads one small collection, and retention drops whole months.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, field_validator
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from faxbox.shared.faxview import WEBHOOK_EVENTS
from faxbox.shared.store.errors import NotFound
from faxbox.shared.store.lookup import one
from faxbox.shared.store.models import StoreModel, UtcDatetime, new_id, utc_now
from faxbox.shared.store.monthly import month_key, parse_month
from faxbox.shared.urlguard import UrlRefused, checked_syntax

Doc = dict[str, Any]

COLLECTION: Final = "webhooks"
LOG_PREFIX: Final = "webhook_log_"
MAX_CONCURRENCY: Final = 50


def _url(value: str) -> str:
    try:
        checked_syntax(value)
    except UrlRefused as refused:
        raise ValueError(refused.message) from None
    return value.strip()


class Webhook(StoreModel):
    id: str = Field(default_factory=lambda: new_id("whk"), alias="_id")
    account_id: str
    faxbox_id: str | None = Field(
        default=None, description="Only this faxbox's faxes; None: every fax of the account."
    )
    url: Annotated[str, AfterValidator(_url)]
    failover_url: str | None = Field(
        default=None, description="Tried at once whenever the URL does not take a delivery."
    )
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    max_concurrency: int = Field(
        default=4, ge=1, le=MAX_CONCURRENCY, description="Requests open to the URL at once."
    )
    enabled: bool = True
    description: str = Field(default="", max_length=200)
    created_at: UtcDatetime = Field(default_factory=utc_now)

    @field_validator("failover_url")
    @classmethod
    def _checked_failover(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _url(value)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {list(WEBHOOK_EVENTS)}")
        if not value:
            raise ValueError("a webhook needs at least one event")
        return [e for e in WEBHOOK_EVENTS if e in value]

    def wants(self, event_type: str, faxbox_id: str | None) -> bool:
        return (
            self.enabled
            and event_type in self.events
            and (self.faxbox_id is None or self.faxbox_id == faxbox_id)
        )


class DeliveryAttempt(StoreModel):
    at: UtcDatetime
    url: str
    status: int | None = Field(default=None, description="The HTTP status, if one came.")
    error: str | None = None
    duration_ms: int = Field(ge=0)
    replay: bool = False
    failover: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


DeliveryState = Literal["pending", "delivered", "failed"]


class WebhookDelivery(StoreModel):
    """One event for one webhook, and what became of telling it."""

    event_id: str = Field(alias="_id")
    webhook_id: str
    account_id: str
    fax_id: str
    event_type: str
    month: str
    body: str = Field(description="The JSON body, as first sent; every attempt sends it.")
    created_at: UtcDatetime = Field(default_factory=utc_now)
    state: DeliveryState = "pending"
    scheduled_attempts: int = Field(default=0, description="Attempts of the retry schedule.")
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None


def log_collection_name(webhook_id: str, month: str) -> str:
    return f"{LOG_PREFIX}{webhook_id}_{parse_month(month)}"


class WebhookStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.collection: AsyncCollection[Doc] = db[COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("account_id", ASCENDING)], name="account_id")

    async def add(self, webhook: Webhook) -> Webhook:
        """Store a webhook whose URLs the caller checked (``urlguard.check_url``)."""
        await self.collection.insert_one(webhook.to_doc())
        return webhook

    async def get(self, webhook_id: str) -> Webhook:
        return await one(self.collection, {"_id": webhook_id}, Webhook, "webhook", webhook_id)

    async def of_account(self, account_id: str) -> list[Webhook]:
        cursor = self.collection.find({"account_id": account_id}).sort("_id", ASCENDING)
        return [Webhook.from_doc(doc) async for doc in cursor]

    async def set_enabled(self, webhook_id: str, enabled: bool) -> Webhook:
        result = await self.collection.update_one(
            {"_id": webhook_id}, {"$set": {"enabled": enabled}}
        )
        if result.matched_count == 0:
            raise NotFound("webhook", webhook_id)
        return await self.get(webhook_id)

    async def remove(self, webhook_id: str) -> None:
        """The webhook and its whole delivery log."""
        result = await self.collection.delete_one({"_id": webhook_id})
        if result.deleted_count == 0:
            raise NotFound("webhook", webhook_id)
        for name in await self.log_months(webhook_id):
            await self.db.drop_collection(log_collection_name(webhook_id, name))

    # -- the delivery log --------------------------------------------------------------

    def log(self, webhook_id: str, month: str) -> AsyncCollection[Doc]:
        return self.db[log_collection_name(webhook_id, month)]

    async def log_months(self, webhook_id: str) -> list[str]:
        """Months with a delivery log, newest first."""
        prefix = f"{LOG_PREFIX}{webhook_id}_"
        names = await self.db.list_collection_names(filter={"name": {"$regex": f"^{prefix}"}})
        return sorted((n.removeprefix(prefix) for n in names if n.startswith(prefix)), reverse=True)

    async def delivery(self, webhook_id: str, month: str, event_id: str) -> WebhookDelivery:
        log = self.log(webhook_id, month)
        return await one(log, {"_id": event_id}, WebhookDelivery, "delivery", event_id)

    async def find_delivery(self, webhook_id: str, event_id: str) -> WebhookDelivery:
        """A delivery by event id, whatever month it is in."""
        for month in await self.log_months(webhook_id):
            doc = await self.log(webhook_id, month).find_one({"_id": event_id})
            if doc is not None:
                return WebhookDelivery.from_doc(doc)
        raise NotFound("delivery", event_id)

    async def recent_deliveries(self, webhook_id: str, limit: int = 50) -> list[WebhookDelivery]:
        """The newest deliveries, newest first."""
        found: list[WebhookDelivery] = []
        for month in await self.log_months(webhook_id):
            cursor = (
                self.log(webhook_id, month)
                .find({})
                .sort("created_at", DESCENDING)
                .limit(limit - len(found))
            )
            found.extend([WebhookDelivery.from_doc(doc) async for doc in cursor])
            if len(found) >= limit:
                break
        return found


def current_month(now: datetime | None = None) -> str:
    return month_key(now or utc_now())
