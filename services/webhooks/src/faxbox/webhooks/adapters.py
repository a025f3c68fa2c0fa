"""The webhooks service's ports on MongoDB (FerretDB v1 locally), httpx and the keys.

- ``StoreWebhooks`` / ``StoreDeliveryLog``: ``faxbox.shared.store.webhooks`` (a delivery
  is created by inserting its event id into the webhook's log of the month: two
  handlings of one event record it once);
- ``KeySigner``: the account's Ed25519 key (``faxbox.shared.store.signing_keys``);
- ``HttpSender``: httpx, through the SSRF guard at every request, connecting to the
  very address the guard checked (see ``faxbox.shared.urlguard``);
- ``LeaseSlots``: ``max_concurrency`` request slots per URL, each a ``GenerationLease``
  shared by every replica, so the limit holds however many replicas run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from faxbox.shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from faxbox.shared.store import NotFound
from faxbox.shared.store.claims import GenerationLease, Held
from faxbox.shared.store.signing_keys import SigningKeys
from faxbox.shared.store.webhooks import (
    DeliveryAttempt,
    DeliveryState,
    Webhook,
    WebhookDelivery,
    WebhookStore,
)
from faxbox.shared.urlguard import IPNetwork, UrlRefused, check_url
from faxbox.webhooks.ports import Response, SlotHeld

log = logging.getLogger(__name__)

Doc = dict[str, Any]

SLOTS_COLLECTION: Final = "webhook_url_slots"
USER_AGENT: Final = "Faxbox-Webhooks/1"


class StoreWebhooks:
    def __init__(self, store: WebhookStore) -> None:
        self._store = store

    async def of_account(self, account_id: str) -> list[Webhook]:
        return await self._store.of_account(account_id)

    async def find(self, webhook_id: str) -> Webhook | None:
        try:
            return await self._store.get(webhook_id)
        except NotFound:
            return None


class StoreDeliveryLog:
    def __init__(self, store: WebhookStore) -> None:
        self._store = store

    async def create(self, delivery: WebhookDelivery) -> WebhookDelivery:
        log_of_month = self._store.log(delivery.webhook_id, delivery.month)
        try:
            await log_of_month.insert_one(delivery.to_doc())
        except DuplicateKeyError:
            existing = await self.get(delivery.webhook_id, delivery.month, delivery.event_id)
            if existing is None:
                raise
            return existing
        return delivery

    async def get(self, webhook_id: str, month: str, event_id: str) -> WebhookDelivery | None:
        doc = await self._store.log(webhook_id, month).find_one({"_id": event_id})
        return None if doc is None else WebhookDelivery.from_doc(doc)

    async def record(
        self,
        delivery: WebhookDelivery,
        attempts: list[DeliveryAttempt],
        *,
        state: DeliveryState,
        scheduled: bool,
        next_attempt_at: datetime | None,
    ) -> None:
        fields: Doc = {"state": state, "next_attempt_at": next_attempt_at}
        if state == "delivered" and delivery.delivered_at is None:
            fields["delivered_at"] = attempts[-1].at
        update: Doc = {
            "$set": fields,
            "$push": {"attempts": {"$each": [a.to_doc() for a in attempts]}},
        }
        if scheduled:
            update["$inc"] = {"scheduled_attempts": 1}
        await self._store.log(delivery.webhook_id, delivery.month).update_one(
            {"_id": delivery.event_id}, update
        )


class KeySigner:
    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    async def headers(self, account_id: str, body: bytes) -> dict[str, str]:
        key = await self._keys.private(account_id)
        timestamp = int(time.time())
        return {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(key, timestamp, body),
        }


class HttpSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        allowed: Sequence[IPNetwork] = (),
    ) -> None:
        self._client = client
        self._allowed = tuple(allowed)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            target = await check_url(url, self._allowed)
        except UrlRefused as refused:
            return Response(None, f"refused: {refused.message}", elapsed())
        host_header = target.host if ":" not in target.host else f"[{target.host}]"
        default_port = 443 if target.scheme == "https" else 80
        if target.port != default_port:
            host_header = f"{host_header}:{target.port}"
        request_headers = {
            **headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": host_header,
        }
        error = "no address"
        for address in target.addresses:
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            try:
                request = self._client.build_request(
                    "POST",
                    target.url_at(address),
                    content=body,
                    headers=request_headers,
                    extensions=extensions,
                )
                response = await self._client.send(request, stream=True)
                await response.aclose()  # the body is not read: only the status counts
                return Response(response.status_code, None, elapsed())
            except httpx.ConnectError as exc:
                error = f"could not connect to {address}: {exc or type(exc).__name__}"
                continue
            except httpx.TimeoutException as exc:
                return Response(None, f"timed out: {type(exc).__name__}", elapsed())
            except httpx.HTTPError as exc:
                return Response(None, f"{type(exc).__name__}: {exc}", elapsed())
        return Response(None, error, elapsed())


@dataclass(frozen=True, slots=True)
class _Slot:
    lease: GenerationLease
    held: Held


class LeaseSlots:
    """``capacity`` leases per URL (``<url digest>-<n>``) in ``webhook_url_slots``."""

    def __init__(self, collection: AsyncCollection[Doc], ttl: timedelta) -> None:
        self._collection = collection
        self._ttl = ttl

    def _lease(self, url: str, n: int) -> GenerationLease:
        digest = hashlib.sha256(url.encode()).hexdigest()[:32]
        return GenerationLease(self._collection, f"{digest}-{n}", self._ttl)

    async def acquire(self, url: str, capacity: int, holder: str) -> SlotHeld | None:
        for n in range(capacity):
            lease = self._lease(url, n)
            held = await lease.acquire(holder)
            if held is not None:
                return _Slot(lease, held)
        return None

    async def release(self, slot: SlotHeld) -> None:
        assert isinstance(slot, _Slot)
        try:
            await slot.lease.release(slot.held)
        except Exception:
            # The request is over; an unreleased slot frees itself when its lease ends.
            log.warning("could not release a URL slot; its lease will run out", exc_info=True)
