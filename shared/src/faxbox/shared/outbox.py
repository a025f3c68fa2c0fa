"""Exactly once onto the bus: record a decision, publish it confirmed, forget it was owed.

Every service that turns work into messages goes through these steps, for one
**idempotency key** — what makes two handlings "the same work": the mail's fax id for the
validator, ``<fax>#<attempt>`` for the transmitter, ``<fax>:<kind>`` for the notifier,
the intake key for the mail-poller, the received fax's id for the inbound receiver.

1. **record**: the decision's messages are written under the key before any is
   published. The write that decides is the insert of a document whose ``_id`` is the
   key, the one write FerretDB v1 makes exclusive: of two deliveries deciding the same
   key at once, exactly one decision stands and the other gets it back, to publish that
   one instead of its own. Just before, the key is entered in the service's *owed* list.
2. **publish**: every message of the decision, in order, each confirmed by the broker.
3. **forget**: the key leaves the owed list. The recorded decision stays and answers
   "was this decided already?" by ``_id``.
4. **sweep**: whatever stayed owed longer than a grace period (the process died between
   record and forget, the broker was away) is published again by any replica, with the
   same message ids; consumers treat the repeat as the duplicate it is.

Handlers return a :class:`Decided` (or ``None``: nothing to say); the runtime records
and publishes it: :meth:`Outbox.consuming` wraps a consumer's handler, :meth:`Outbox.emit`
serves the mail-poller and the inbound receiver, which answer IMAP and calls rather than
deliveries, and :meth:`Outbox.publish_soon` whoever must not wait for the broker (a call
about to be placed, a web request): what is not confirmed stays owed for the sweep. A
handler that must write something of its own only once its decision is durable (the
transmitter ends its job after recording a call's outcome) records the decision itself
and returns the :class:`Recorded`. No handler publishes.

A handler that finds its key decided before returns that :class:`Recorded` to have it
published again (consumers deduplicate on the message id), or ``None`` when
``owed`` is False and it has no reason to repeat it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from prometheus_client import Counter

from faxbox.shared.contracts import Message
from faxbox.shared.policy import RetryLater, is_infrastructure
from faxbox.shared.ports import Publisher

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

SWEPT = Counter(
    "faxbox_outbox_swept_total",
    "Messages a sweep published because an earlier publish was never confirmed",
    ["outbox"],
)


@dataclass(frozen=True, slots=True)
class Decided:
    """The messages decided for one idempotency key, in publishing order.

    ``retry``: come back after this delay once the messages are out (a redial); the
    delivery is then settled as if the handler had raised it.
    """

    key: str
    messages: tuple[Message, ...]
    retry: RetryLater | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a decision needs an idempotency key")
        if not self.messages:
            raise ValueError("a decision has at least one message; return None for none")


@dataclass(frozen=True, slots=True)
class Recorded(Decided):
    """A decision as the store holds it; ``owed`` while its publishing is not confirmed."""

    owed: bool = True


class DecisionStore(Protocol):
    """Where decisions and the list of owed keys live (MongoDB, or memory in tests)."""

    async def get(self, key: str) -> Recorded | None:
        """The decision recorded under ``key``, if any."""
        ...

    async def record(self, decided: Decided) -> Recorded:
        """Owe ``decided.key``, then record the decision unless one exists: either way,
        return the decision that stands (owed)."""
        ...

    async def forget(self, key: str) -> None:
        """Every message of the key's decision was confirmed: it is owed no more."""
        ...

    async def owed(self, older_than: datetime) -> list[Recorded]:
        """Decisions owed since before ``older_than``."""
        ...


DecidingHandler = Callable[[M], Awaitable[Decided | None]]


class Outbox:
    """One service's decisions and the publisher they go out through."""

    def __init__(self, store: DecisionStore, publisher: Publisher, *, name: str = "") -> None:
        self.store = store
        self.publisher = publisher
        self.name = name

    async def get(self, key: str) -> Recorded | None:
        return await self.store.get(key)

    async def record(self, decided: Decided) -> Recorded:
        if isinstance(decided, Recorded):
            return decided
        return await self.store.record(decided)

    async def deliver(self, recorded: Recorded) -> None:
        """Publish every message (each confirmed), then forget the key was owed."""
        for message in recorded.messages:
            await self.publisher.publish(message)
        if recorded.owed:
            await self.store.forget(recorded.key)

    async def publish_soon(
        self, recorded: Recorded, wait_s: float | None = None, *, only_outages: bool = False
    ) -> bool:
        """Publish a recorded decision now if the broker confirms (within ``wait_s`` when
        given); if not, it stays owed and the sweep publishes it with the same message ids.
        True if confirmed. ``only_outages``: an error that is not an outage of the database
        or the broker is raised, not left to the sweep."""
        if not recorded.owed:
            return True
        try:
            await asyncio.wait_for(self.deliver(recorded), wait_s)
        except Exception as exc:  # TimeoutError included: the sweep takes over
            if only_outages and not is_infrastructure(exc):
                raise
            log.warning(
                "publishing %s not confirmed (%r); the outbox sweep publishes it",
                recorded.key,
                exc,
            )
            return False
        return True

    async def emit(self, decided: Decided) -> Recorded:
        """Record, then publish: raises if the broker did not confirm (it stays owed)."""
        recorded = await self.record(decided)
        await self.deliver(recorded)
        return recorded

    def consuming(self, handler: DecidingHandler[M]) -> Callable[[M], Awaitable[None]]:
        """A consumer's handler: whatever ``handler`` decides is recorded and published
        before the delivery is settled."""

        async def handle(message: M) -> None:
            decided = await handler(message)
            if decided is None:
                return
            await self.emit(decided)
            if decided.retry is not None:
                raise decided.retry

        return handle

    async def sweep(self, grace_s: float) -> int:
        """Publish what has been owed for longer than ``grace_s``; returns how many messages."""
        sent = 0
        older_than = datetime.now(UTC) - timedelta(seconds=grace_s)
        for recorded in await self.store.owed(older_than):
            await self.deliver(recorded)
            sent += len(recorded.messages)
        if sent:
            SWEPT.labels(self.name).inc(sent)
            log.warning("published %d message(s) left owed by an earlier failure", sent)
        return sent

    async def sweep_forever(self, interval_s: float, grace_s: float) -> None:
        while True:
            try:
                await self.sweep(grace_s)
            except Exception as exc:
                if is_infrastructure(exc):
                    # An outage: the settling policy's wait already says so, once per try.
                    log.warning("outbox sweep: %s; trying again next interval", exc)
                else:
                    log.exception("outbox sweep failed; trying again next interval")
            await asyncio.sleep(interval_s)
