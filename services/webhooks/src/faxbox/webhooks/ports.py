"""The webhooks service's interfaces to the outside: unit tests supply their own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from faxbox.shared.store.webhooks import DeliveryAttempt, DeliveryState, Webhook, WebhookDelivery


class Webhooks(Protocol):
    async def of_account(self, account_id: str) -> list[Webhook]: ...

    async def find(self, webhook_id: str) -> Webhook | None: ...


class DeliveryLog(Protocol):
    async def create(self, delivery: WebhookDelivery) -> WebhookDelivery:
        """Record the delivery unless it is there already; return the one recorded."""
        ...

    async def get(self, webhook_id: str, month: str, event_id: str) -> WebhookDelivery | None: ...

    async def record(
        self,
        delivery: WebhookDelivery,
        attempts: list[DeliveryAttempt],
        *,
        state: DeliveryState,
        scheduled: bool,
        next_attempt_at: datetime | None,
    ) -> None:
        """Add these attempts; ``scheduled``: they were one step of the retry schedule."""
        ...


class Signer(Protocol):
    async def headers(self, account_id: str, body: bytes) -> dict[str, str]:
        """Faxbox-Timestamp and Faxbox-Signature for this body, signed now."""
        ...


@dataclass(frozen=True, slots=True)
class Response:
    status: int | None  # None: no HTTP answer (refused by the guard, connect error, timeout)
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST once to a URL the SSRF guard accepts now, never following a redirect."""
        ...


class SlotHeld(Protocol):
    """A request slot of one URL, held until released."""


class UrlSlots(Protocol):
    async def acquire(self, url: str, capacity: int, holder: str) -> SlotHeld | None:
        """One of ``capacity`` slots of ``url``; None while all are taken."""
        ...

    async def release(self, slot: SlotHeld) -> None: ...
