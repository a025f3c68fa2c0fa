"""The bus in memory: the same routing and the same settling policy, no broker.

A message published goes, as JSON and back (what the broker carries), to the queue of
every service that ``SUBSCRIPTIONS`` binds to its type and that has a consumer here.
``join()`` hands queued messages to their handlers one at a time until every queue is
empty, and settles each by ``policy.decide``: acked, dead-lettered (kept in
``dead_letters`` with the reason) or parked for a retry (kept in ``retries``, with the
delay a retry queue would hold it for and the notes it carries; ``release_retries()``
puts them back, as if that time had passed).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faxbox.shared import notes
from faxbox.shared.contracts import Message, contract_by_name
from faxbox.shared.logs import fax_context
from faxbox.shared.policy import Attempts, DeadLetter, PermanentError, Retry, decide
from faxbox.shared.routing import subscriptions

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]
M = TypeVar("M", bound=Message)

# Deliveries one join() may make before it calls the flow a loop.
MAX_DELIVERIES = 10_000


@dataclass(frozen=True, slots=True)
class PolicyDefaults:
    """``BrokerSettings``' defaults for the policy, without reading the environment."""

    retry_delays_s: Sequence[int] = (5, 30, 120)
    max_transient_attempts: int = 5
    infrastructure_backoff_max_s: int = 60


@dataclass(frozen=True, slots=True)
class DeadLettered:
    service: str
    message: Message
    reason: str
    kind: str


@dataclass(frozen=True, slots=True)
class Parked:
    service: str
    message: Message
    delay_s: int
    attempts: Attempts
    kind: str
    notes: Mapping[str, str] = field(default_factory=dict)


def _carried(message: Message) -> Message:
    return contract_by_name(type(message).__name__).model_validate_json(message.model_dump_json())


class MemoryBus:
    def __init__(self, settings: PolicyDefaults | None = None) -> None:
        self.settings = settings or PolicyDefaults()
        self.published: list[Message] = []
        self.dead_letters: list[DeadLettered] = []
        self.retries: list[Parked] = []
        self._handlers: dict[str, dict[type[Message], Handler]] = {}
        self._queues: dict[str, deque[tuple[Message, Attempts, Mapping[str, str]]]] = {}

    def consumer(self, service: str, handlers: Mapping[type[Message], Handler]) -> None:
        """Consume ``service``'s queue with these handlers (as ``Bus.consumer``)."""
        expected = set(subscriptions(service))
        unknown = [t.__name__ for t in handlers if t not in expected]
        if unknown:
            raise ValueError(f"{service} does not subscribe to {unknown}")
        self._handlers[service] = dict(handlers)
        self._queues.setdefault(service, deque())

    async def publish(self, message: Message) -> None:
        carried = _carried(message)
        self.published.append(carried)
        for service, queue in self._queues.items():
            if type(carried) in subscriptions(service):
                queue.append((carried, Attempts(), {}))

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.published if isinstance(m, kind)]

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def join(self) -> int:
        """Deliver until every queue is empty; returns how many deliveries were made."""
        made = 0
        while True:
            service = next((s for s, q in self._queues.items() if q), None)
            if service is None:
                return made
            if made >= MAX_DELIVERIES:
                raise RuntimeError(f"still delivering after {made} deliveries: a loop?")
            message, attempts, carried = self._queues[service].popleft()
            await self._deliver(service, message, attempts, carried)
            made += 1

    def release_retries(self) -> int:
        """Put every parked message back in its queue; returns how many."""
        parked, self.retries = self.retries, []
        for item in parked:
            self._queues[item.service].append((item.message, item.attempts, item.notes))
        return len(parked)

    async def _deliver(
        self, service: str, message: Message, attempts: Attempts, carried: Mapping[str, str]
    ) -> None:
        with fax_context(message.fax_id):
            failure: Exception | None = None
            try:
                handler = self._handlers[service].get(type(message))
                if handler is None:
                    raise PermanentError(f"{service} has no handler for {type(message).__name__}")
                with notes.carrying(carried):
                    await handler(message)
            except Exception as exc:
                failure = exc
            decision = decide(failure, attempts, self.settings)
            if isinstance(decision, DeadLetter):
                log.info("dead-lettering %s: %s", type(message).__name__, decision.reason)
                self.dead_letters.append(
                    DeadLettered(service, message, decision.reason, decision.kind)
                )
            elif isinstance(decision, Retry):
                kept = {**carried, **decision.notes}
                self.retries.append(
                    Parked(service, message, decision.delay_s, decision.next, decision.kind, kept)
                )
