"""In-memory versions of the webhooks service's ports (our own interfaces only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from faxbox.shared.contracts import FaxMessage, WebhookDeliveryRequested
from faxbox.shared.outbox import Outbox
from faxbox.shared.store.webhooks import DeliveryAttempt, DeliveryState, Webhook, WebhookDelivery
from faxbox.shared.testing import MemoryDecisionStore, MemoryPublisher
from faxbox.webhooks.handlers import Deps, on_fax_event
from faxbox.webhooks.ports import Response, SlotHeld

T0 = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeWebhooks:
    hooks: list[Webhook] = field(default_factory=list)

    async def of_account(self, account_id: str) -> list[Webhook]:
        return [h for h in self.hooks if h.account_id == account_id]

    async def find(self, webhook_id: str) -> Webhook | None:
        return next((h for h in self.hooks if h.id == webhook_id), None)


@dataclass
class FakeLog:
    deliveries: dict[tuple[str, str, str], WebhookDelivery] = field(default_factory=dict)

    async def create(self, delivery: WebhookDelivery) -> WebhookDelivery:
        key = (delivery.webhook_id, delivery.month, delivery.event_id)
        return self.deliveries.setdefault(key, delivery)

    async def get(self, webhook_id: str, month: str, event_id: str) -> WebhookDelivery | None:
        return self.deliveries.get((webhook_id, month, event_id))

    async def record(
        self,
        delivery: WebhookDelivery,
        attempts: list[DeliveryAttempt],
        *,
        state: DeliveryState,
        scheduled: bool,
        next_attempt_at: datetime | None,
    ) -> None:
        key = (delivery.webhook_id, delivery.month, delivery.event_id)
        current = self.deliveries[key]
        self.deliveries[key] = current.model_copy(
            update={
                "attempts": [*current.attempts, *attempts],
                "state": state,
                "scheduled_attempts": current.scheduled_attempts + (1 if scheduled else 0),
                "next_attempt_at": next_attempt_at,
                "delivered_at": current.delivered_at
                or (attempts[-1].at if state == "delivered" else None),
            }
        )

    def only(self) -> WebhookDelivery:
        (delivery,) = self.deliveries.values()
        return delivery


class FakeSigner:
    async def headers(self, account_id: str, body: bytes) -> dict[str, str]:
        return {"Faxbox-Timestamp": "1", "Faxbox-Signature": f"sig-of-{account_id}"}


@dataclass
class FakeSender:
    """Answers each URL with the statuses queued for it (then 200)."""

    answers: dict[str, list[int | None]] = field(default_factory=dict)
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        self.posts.append((url, body, headers))
        queued = self.answers.get(url, [])
        status = queued.pop(0) if queued else 200
        return Response(status, None if status else "connection refused", 3)


@dataclass
class FakeSlots:
    capacity_taken: dict[str, int] = field(default_factory=dict)
    released: int = 0

    async def acquire(self, url: str, capacity: int, holder: str) -> SlotHeld | None:
        if self.capacity_taken.get(url, 0) >= capacity:
            return None
        self.capacity_taken[url] = self.capacity_taken.get(url, 0) + 1
        return url

    async def release(self, slot: SlotHeld) -> None:
        self.capacity_taken[str(slot)] -= 1
        self.released += 1


@dataclass
class World:
    webhooks: FakeWebhooks = field(default_factory=FakeWebhooks)
    log: FakeLog = field(default_factory=FakeLog)
    sender: FakeSender = field(default_factory=FakeSender)
    slots: FakeSlots = field(default_factory=FakeSlots)
    decisions: MemoryDecisionStore = field(default_factory=MemoryDecisionStore)
    bus: MemoryPublisher = field(default_factory=MemoryPublisher)
    clock: Clock = field(default_factory=Clock)

    def deps(self, schedule: tuple[int, ...] = (10, 60)) -> Deps:
        return Deps(
            webhooks=self.webhooks,
            log=self.log,
            signer=FakeSigner(),
            sender=self.sender,
            slots=self.slots,
            worker_id="w1",
            schedule_s=schedule,
            clock=self.clock,
        )

    async def told(self, event: FaxMessage) -> list[WebhookDeliveryRequested]:
        """The event handled as the consumer does: the commands the outbox published."""
        before = len(self.bus.published)
        handler = Outbox(self.decisions, self.bus).consuming(
            partial(on_fax_event, deps=self.deps())
        )
        await handler(event)
        return list(self.bus.published[before:])
