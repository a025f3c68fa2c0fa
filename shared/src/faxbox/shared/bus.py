"""The message bus: RabbitMQ through aio-pika, with every message settled on purpose.

Topology (all declared idempotently, names from ``faxbox.shared.routing``):

- one durable topic exchange for every contract;
- per service one durable quorum queue bound to the routing keys it subscribes to,
  with a delivery limit whose overflow dead-letters (a message that keeps killing its
  consumer ends up in the dead-letter queue instead of looping forever);
- a direct dead-letter exchange and per service a dead-letter queue (a service that
  consumes nothing, such as the mail-poller, puts records of what it set aside there);
- per service held retry queues, one per step of the retry ladder, whose copies carry
  the moment they are due; the service's own consumers move them home when due
  (``faxbox.shared.delays``: not the broker's TTL dead-lettering, which RabbitMQ 3.10
  can strand after leader changes).

Settling, after the handler returns or raises:

- returns → ack;
- ``PermanentError`` (and anything undecodable) → a copy goes to the dead-letter queue
  with the reason in headers, confirmed, then the original is acked;
- an outage of the database or the broker → a copy waits in a retry queue, with a
  capped backoff, as long as the outage lasts;
- ``TransientError`` or any unexpected exception → a copy goes to the next retry queue
  with the attempt count incremented; once the attempts are used up, to the dead-letter
  queue; ``RetryLater`` picks its own delay (redials);
- if even that publish fails, the original is nacked with requeue, so nothing is lost.

Which of these applies is decided in one place, ``faxbox.shared.policy.decide``; the
consumer only carries the decision out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
)
from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError
from pamqp.common import Arguments
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from faxbox.shared import delays, notes
from faxbox.shared.contracts import Message, contract_by_name
from faxbox.shared.failover import connect_failover, split_urls
from faxbox.shared.logs import fax_context
from faxbox.shared.policy import Ack, Attempts, DeadLetter, Retry, decide, on_ladder
from faxbox.shared.policy import PermanentError as PermanentError
from faxbox.shared.policy import RetryLater as RetryLater
from faxbox.shared.policy import SettleError as SettleError
from faxbox.shared.policy import TransientError as TransientError
from faxbox.shared.routing import Topology, routing_key, subscriptions
from faxbox.shared.settings import BrokerSettings
from faxbox.shared.settling import Settlements, SettlingChannel

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

ATTEMPT_HEADER: Final = "x-faxbox-attempt"
WAITS_HEADER: Final = "x-faxbox-waits"
REASON_HEADER: Final = "x-faxbox-reason"
# The re-drive run that last moved a message back from its dead-letter queue.
REDRIVE_HEADER: Final = "x-faxbox-redrive"
ERROR_KIND_HEADER: Final = "x-faxbox-error-kind"
ORIGIN_QUEUE_HEADER: Final = "x-faxbox-origin-queue"
ORIGIN_ROUTING_KEY_HEADER: Final = "x-faxbox-origin-routing-key"
DEAD_LETTERED_AT_HEADER: Final = "x-faxbox-dead-lettered-at"
SCHEMA_VERSION_HEADER: Final = "x-faxbox-schema-version"
# How long a retry carrying notes keeps trying to park its copy (see ``Consumer._park``).
PARK_PATIENCE_S: Final = 60.0
PARK_RETRY_S: Final = 1.0

CONSUMED = Counter(
    "faxbox_messages_consumed_total",
    "Messages settled by consumers",
    ["queue", "type", "outcome"],
)
PUBLISHED = Counter("faxbox_messages_published_total", "Messages confirmed by the broker", ["type"])
INFRASTRUCTURE_WAITS = Counter(
    "faxbox_infrastructure_waits_total",
    "Deliveries parked because the database or the broker was unavailable",
    ["queue"],
)
WAITING_ON_INFRASTRUCTURE = Gauge(
    "faxbox_waiting_on_infrastructure",
    "1 while the queue's last settled delivery was parked for an outage, else 0",
    ["queue"],
)
HANDLER_SECONDS = Histogram(
    "faxbox_handler_seconds", "Time spent in message handlers", ["queue", "type"]
)


Handler = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a handler may want to know about the delivery besides the message."""

    attempt: int
    redelivered: bool


def encode(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.fax_id,
        type=type(message).__name__,
        timestamp=message.occurred_at,
        headers={SCHEMA_VERSION_HEADER: message.schema_version, ATTEMPT_HEADER: 1},
    )


def decode(incoming: AbstractIncomingMessage) -> Message:
    """Parse a delivery into its contract; raises ``PermanentError`` if it cannot."""
    if not incoming.type:
        raise PermanentError("message has no type property; cannot tell which contract it is")
    try:
        contract = contract_by_name(incoming.type)
    except KeyError as exc:
        raise PermanentError(str(exc.args[0])) from None
    try:
        return contract.model_validate_json(incoming.body)
    except ValidationError as exc:
        raise PermanentError(f"body is not a valid {incoming.type}: {exc}") from None


class Bus:
    """One connection, one publishing channel with confirms, consumers on their own channel."""

    def __init__(self, settings: BrokerSettings, *, topology: Topology | None = None) -> None:
        self.settings = settings
        self.topology = topology or Topology(settings.exchange_prefix)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._dead_letter: AbstractExchange | None = None
        self._declared_retry_queues: set[str] = set()
        self._declared_dead_letter_queues: set[str] = set()
        self._publish_lock = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((AMQPConnectionError, OSError)),
            wait=wait_exponential(multiplier=0.2, max=5),
            # 0: the caller waits (faxbox.shared.startup); here one try of each node.
            stop=stop_after_delay(self.settings.connect_timeout_s)
            if self.settings.connect_timeout_s
            else stop_after_attempt(len(split_urls(self.settings.amqp_url))),
            reraise=True,
        ):
            with attempt:
                # Each try starts at the next node of a cluster (FAXBOX_AMQP_URL may list
                # several); once connected, failover.py moves on to survivors by itself.
                self._connection = await connect_failover(
                    self.settings.amqp_url, first=attempt.retry_state.attempt_number - 1
                )
        # on_return_raises makes an unroutable mandatory publish an error, not a silent drop.
        self._publish_channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._events = await self._publish_channel.declare_exchange(
            self.topology.events_exchange, ExchangeType.TOPIC, durable=True
        )
        self._dead_letter = await self._publish_channel.declare_exchange(
            self.topology.dead_letter_exchange, ExchangeType.DIRECT, durable=True
        )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._connection

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    # --- topology ----------------------------------------------------------------------

    def _queue_arguments(self, service: str) -> Arguments:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.topology.dead_letter_exchange,
            "x-dead-letter-routing-key": self.topology.queue(service),
            "x-delivery-limit": self.settings.delivery_limit,
        }

    async def declare_service(self, service: str) -> None:
        """Declare the service's queue, bindings, dead-letter queue and held queues."""
        channel = self._channel()
        queue = await channel.declare_queue(
            self.topology.queue(service), durable=True, arguments=self._queue_arguments(service)
        )
        for key in self.topology.bindings(service):
            await queue.bind(self.topology.events_exchange, routing_key=key)
        await self._declare_dead_letter_queue(service)
        for delay in self.settings.retry_delays_s:
            await self.declare_held_queue(service, delays.held_step(on_ladder(delay)))

    async def _declare_dead_letter_queue(self, service: str) -> None:
        name = self.topology.dead_letter_queue(service)
        if name in self._declared_dead_letter_queues:
            return
        dlq = await self._channel().declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(self.topology.dead_letter_exchange, routing_key=self.topology.queue(service))
        self._declared_dead_letter_queues.add(name)

    async def declare_held_queue(self, service: str, step: int) -> str:
        """A held queue of the retry ladder (``faxbox.shared.delays``): a plain quorum
        queue; its copies go home when a releaser finds them due."""
        name = self.topology.retry_queue(service, step)
        if name in self._declared_retry_queues:
            return name
        await self._channel().declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        self._declared_retry_queues.add(name)
        return name

    def _channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._publish_channel

    # --- publishing --------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        """Publish and wait for the broker's confirm; unroutable is an error."""
        await self._publish_raw(self._exchange(), encode(message), routing_key(type(message)))
        PUBLISHED.labels(type(message).__name__).inc()

    async def _publish_raw(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str
    ) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(
                (AMQPConnectionError, ChannelInvalidStateError, ConnectionError)
            ),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.settings.publish_timeout_s),
            reraise=True,
        ):
            with attempt:
                await exchange.publish(
                    message,
                    routing_key=key,
                    mandatory=True,
                    timeout=self.settings.publish_timeout_s,
                )

    def _exchange(self) -> AbstractExchange:
        if self._events is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._events

    async def dead_letter(
        self, incoming: AbstractIncomingMessage, queue: str, reason: str, kind: str
    ) -> None:
        """Copy a delivery to the queue's dead-letter queue with why, confirmed."""
        if self._dead_letter is None:
            raise RuntimeError("Bus.connect() has not been called")
        headers = dict(incoming.headers or {})
        headers.update(
            {
                REASON_HEADER: reason[:4000],
                ERROR_KIND_HEADER: kind,
                ORIGIN_QUEUE_HEADER: queue,
                ORIGIN_ROUTING_KEY_HEADER: incoming.routing_key or "",
                DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            }
        )
        await self._publish_raw(self._dead_letter, _copy(incoming, headers), queue)

    async def dead_letter_record(
        self, service: str, record: Mapping[str, Any], reason: str, kind: str
    ) -> None:
        """Put a JSON record (not a delivery) in ``service``'s dead-letter queue, confirmed,
        with the same reason headers as a dead-lettered delivery: how a service that
        consumes nothing (the mail-poller) shows operators what it set aside."""
        if self._dead_letter is None:
            raise RuntimeError("Bus.connect() has not been called")
        await self._declare_dead_letter_queue(service)
        queue = self.topology.queue(service)
        message = aio_pika.Message(
            body=json.dumps(record, default=str).encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            type=f"{service}.dead-letter-record",
            headers={
                REASON_HEADER: reason[:4000],
                ERROR_KIND_HEADER: kind,
                ORIGIN_QUEUE_HEADER: queue,
                DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            },
        )
        await self._publish_raw(self._dead_letter, message, queue)

    async def retry(
        self,
        incoming: AbstractIncomingMessage,
        service: str,
        delay_s: int,
        attempts: Attempts,
        carry: Mapping[str, str] | None = None,
    ) -> int:
        """Park a copy, due in ``delay_s`` (rounded up to the ladder), in the held queue it
        waits in; it comes back with ``attempts`` and the notes it carried, ``carry``
        added (see :mod:`faxbox.shared.notes`). Returns the held queue's step."""
        wait = on_ladder(delay_s)
        step = delays.held_step(wait)
        name = await self.declare_held_queue(service, step)
        headers = dict(incoming.headers or {})
        headers[ATTEMPT_HEADER] = attempts.transient
        headers[WAITS_HEADER] = attempts.waits
        headers.update(notes.to_headers(carry or {}))
        headers.update(delays.due_header(wait))
        await self.move(incoming, name, headers)
        return step

    async def move(
        self, incoming: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """A copy of ``incoming`` with ``headers`` into ``queue``, confirmed."""
        await self._publish_raw(self._channel().default_exchange, _copy(incoming, headers), queue)

    async def redrive(self, service: str, limit: int | None = None) -> int:
        """Move up to ``limit`` dead-lettered messages back to the service's queue.

        Only what was dead-lettered when the call began is moved, once: a re-driven copy
        carries this run's id, and a message that fails again and comes back while the
        run goes on is left where it is, so a run never loops on a message that keeps
        failing.
        """
        name = self.topology.dead_letter_queue(service)
        queue = await self._channel().get_queue(name)
        # Counted on the wire: a robust channel answers a passive declare from its cache.
        underlay = await self._channel().get_underlay_channel()
        waiting = (await underlay.queue_declare(name, passive=True)).message_count or 0
        budget = waiting if limit is None else min(limit, waiting)
        run = uuid.uuid4().hex
        moved = 0
        while moved < budget:
            incoming = await queue.get(no_ack=False, fail=False)
            if incoming is None:
                break
            if (incoming.headers or {}).get(REDRIVE_HEADER) == run:
                await incoming.nack(requeue=True)
                break
            headers = {
                k: v
                for k, v in (incoming.headers or {}).items()
                if not k.startswith("x-faxbox-") or k == SCHEMA_VERSION_HEADER
            }
            headers[ATTEMPT_HEADER] = 1
            headers[REDRIVE_HEADER] = run
            await self._publish_raw(
                self._channel().default_exchange,
                _copy(incoming, headers),
                self.topology.queue(service),
            )
            await incoming.ack()
            moved += 1
        return moved

    # --- consuming ---------------------------------------------------------------------

    def consumer(self, service: str, handlers: Mapping[type[Message], Handler]) -> Consumer:
        expected = set(subscriptions(service))
        unknown = [t.__name__ for t in handlers if t not in expected]
        if unknown:
            raise ValueError(f"{service} does not subscribe to {unknown}")
        return Consumer(self, service, dict(handlers))


def _copy(incoming: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body=incoming.body,
        headers=headers,
        content_type=incoming.content_type,
        content_encoding=incoming.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=incoming.message_id,
        correlation_id=incoming.correlation_id,
        type=incoming.type,
        timestamp=incoming.timestamp,
    )


def _header_count(incoming: AbstractIncomingMessage, name: str, default: int) -> int:
    raw = (incoming.headers or {}).get(name, default)
    return raw if isinstance(raw, int) and raw >= default else default


def attempts_of(incoming: AbstractIncomingMessage) -> Attempts:
    return Attempts(
        transient=_header_count(incoming, ATTEMPT_HEADER, 1),
        waits=_header_count(incoming, WAITS_HEADER, 0),
    )


class Consumer:
    """Consumes a service's queue and settles every delivery on purpose."""

    def __init__(self, bus: Bus, service: str, handlers: dict[type[Message], Handler]) -> None:
        self.bus = bus
        self.service = service
        self.queue_name = bus.topology.queue(service)
        self._handlers = handlers
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Per underlying channel: a reconnect brings a new channel with its own tags,
        # while handlers of the old one may still finish (and fail to settle there).
        self._settlements: dict[SettlingChannel, Settlements] = {}
        self._releaser = delays.Releaser(bus, service)

    async def start(self) -> None:
        await self.bus.declare_service(self.service)
        await self._releaser.start()
        self._channel = await self.bus.connection.channel()
        await self._channel.set_qos(prefetch_count=self.bus.settings.prefetch)
        self._queue = await self._channel.get_queue(self.queue_name)
        self._tag = await self._queue.consume(self._on_message)

    @contextlib.asynccontextmanager
    async def running(self, grace_s: float) -> AsyncIterator[None]:
        """Consume for the length of the block; then stop, giving work in hand ``grace_s``."""
        await self.start()
        try:
            yield
        finally:
            await self.stop(grace_s)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking messages, let the ones in hand finish, then close the channel.

        Anything still unfinished after the grace period is abandoned unacked, so the
        broker redelivers it to another consumer.
        """
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        pending = {t for t in self._in_flight if not t.done()}
        if pending:
            _, unfinished = await asyncio.wait(pending, timeout=grace_s)
            # Closing the channel no longer cuts handlers off (see _on_message): do it.
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished, timeout=5)
        await self._releaser.stop()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    def _settlements_of(self, incoming: AbstractIncomingMessage) -> Settlements | None:
        channel = incoming.channel
        if incoming.delivery_tag is None or channel is None:
            return None
        settlements = self._settlements.get(channel)
        if settlements is None:
            for old in [c for c, s in self._settlements.items() if not s.in_hand]:
                del self._settlements[old]
            settlements = self._settlements[channel] = Settlements(channel)
        return settlements

    async def _ack(self, incoming: AbstractIncomingMessage) -> None:
        settlements = self._settlements_of(incoming)
        if settlements is None or incoming.delivery_tag is None:
            await incoming.ack()
        else:
            await settlements.ack(incoming.delivery_tag)

    async def _requeue(self, incoming: AbstractIncomingMessage) -> None:
        settlements = self._settlements_of(incoming)
        if settlements is None or incoming.delivery_tag is None:
            await incoming.nack(requeue=True)
        else:
            await settlements.nack(incoming.delivery_tag, requeue=True)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        # First, before any await: a multiple ack of later deliveries must know of this one.
        settlements = self._settlements_of(incoming)
        if settlements is not None and incoming.delivery_tag is not None:
            settlements.received(incoming.delivery_tag)
        if self._stopping:
            await self._requeue(incoming)
            return
        # aiormq cancels its delivery tasks when the channel closes (a broker restart, a
        # dropped connection). Work in hand must not be cut off there: a call that has
        # just reached the far end, cancelled before its outcome is recorded, would be
        # dialled again. So the handling runs in a task of its own and finishes; its
        # settlement then fails with the channel, and the broker delivers the message
        # again, which every handler tolerates (it finds the outcome recorded).
        work = asyncio.create_task(self._settle_in_hand(incoming))
        self._in_flight.add(work)
        work.add_done_callback(self._in_flight.discard)
        await asyncio.shield(work)

    async def _settle_in_hand(self, incoming: AbstractIncomingMessage) -> None:
        try:
            await self._settle(incoming)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "could not settle %s (%s: %s); the broker will deliver it again",
                incoming.type,
                type(exc).__name__,
                exc,
            )

    async def _settle(self, incoming: AbstractIncomingMessage) -> None:
        type_name = incoming.type or "unknown"
        attempts = attempts_of(incoming)
        with fax_context(incoming.correlation_id):
            started = time.perf_counter()
            failure: Exception | None = None
            try:
                message = decode(incoming)
                handler = self._handlers.get(type(message))
                if handler is None:
                    raise PermanentError(f"{self.service} has no handler for {type_name}")
                with notes.carrying(notes.from_headers(incoming.headers)):
                    await handler(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            decision = decide(failure, attempts, self.bus.settings)
            if isinstance(decision, Retry) and decision.kind == "transient":
                log.error(
                    "handler failed on %s (attempt %d)",
                    type_name,
                    attempts.transient,
                    exc_info=failure,
                )
            outcome = await self._carry_out(incoming, decision)
            HANDLER_SECONDS.labels(self.queue_name, type_name).observe(
                time.perf_counter() - started
            )
            CONSUMED.labels(self.queue_name, type_name, outcome).inc()

    async def _carry_out(
        self, incoming: AbstractIncomingMessage, decision: Ack | DeadLetter | Retry
    ) -> str:
        waiting = WAITING_ON_INFRASTRUCTURE.labels(self.queue_name)
        if isinstance(decision, Ack):
            await self._ack(incoming)
            waiting.set(0)
            return "acked"
        if isinstance(decision, DeadLetter):
            await self._to_dead_letter(incoming, decision.reason, decision.kind)
            waiting.set(0)
            return "dead_lettered"
        step = await self._park(incoming, decision)
        if step is None:
            await self._requeue(incoming)
            return "requeued"
        await self._ack(incoming)
        # Said once the copy is parked and the delivery acked: from here on, the copy is
        # the message.
        if decision.kind == "infrastructure":
            INFRASTRUCTURE_WAITS.labels(self.queue_name).inc()
            waiting.set(1)
            log.warning(
                "waiting out an outage: %s back in %ds (wait %d): %s",
                incoming.type,
                decision.delay_s,
                decision.next.waits,
                decision.reason,
            )
        else:
            log.warning(
                "retrying %s in %ds (%s): %s",
                incoming.type,
                decision.delay_s,
                decision.kind,
                decision.reason,
            )
        try:
            await self._releaser.watch(step)
        except Exception as exc:  # the releasers' probe finds the queue later
            log.warning("could not watch the held queue of %ds: %r", step, exc)
        return "retried"

    async def _park(self, incoming: AbstractIncomingMessage, decision: Retry) -> int | None:
        """The copy parked for the retry; its held queue's step, None when it could not be.

        A plain retry that cannot be parked is requeued: the delivery itself is the same
        message. A retry with notes is not: they exist nowhere but in the copy, and the
        delivery requeued without them would be handled as if they had never been
        written (a transmitter would dial the pages they say were confirmed again). So
        it is tried again for ``PARK_PATIENCE_S``: a node going away takes the held
        queue's leader or our connection with it for a few seconds. Parked after our
        delivery came back to the broker, the copy is a second delivery of the message,
        which every handler takes as a redelivery; the one with the notes says more.
        """
        patience = PARK_PATIENCE_S if decision.notes else 0.0
        deadline = time.monotonic() + patience
        while True:
            try:
                return await self.bus.retry(
                    incoming, self.service, decision.delay_s, decision.next, decision.notes
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() >= deadline:
                    log.exception("could not park the message for retry; requeueing it")
                    return None
                log.warning(
                    "could not park the message and its notes for retry; trying again",
                    exc_info=True,
                )
                await asyncio.sleep(PARK_RETRY_S)

    async def _to_dead_letter(
        self, incoming: AbstractIncomingMessage, reason: str, kind: str
    ) -> None:
        log.error("dead-lettering %s: %s", incoming.type, reason)
        try:
            await self.bus.dead_letter(incoming, self.queue_name, reason, kind)
        except Exception:
            log.exception("could not dead-letter; leaving the message to the broker")
            await self._requeue(incoming)
            return
        await self._ack(incoming)


class EventTap:
    """Every event published from now on, on a private temporary queue: for watching.

    For tools and tests (``faxbox demo``, the end-to-end tests), never for services: the
    queue is exclusive and auto-deleted, so what it holds is gone when the connection
    drops. Undecodable messages are skipped.
    """

    def __init__(self, bus: Bus, keys: tuple[str, ...] = ("#",)) -> None:
        self._bus = bus
        self._keys = keys
        self._channel: AbstractChannel | None = None
        self._received: asyncio.Queue[Message] = asyncio.Queue()

    async def __aenter__(self) -> EventTap:
        self._channel = await self._bus.connection.channel()
        exchange = await self._channel.declare_exchange(
            self._bus.topology.events_exchange, ExchangeType.TOPIC, durable=True
        )
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        try:
            self._received.put_nowait(decode(incoming))
        except PermanentError as exc:
            log.warning("event tap: skipping an undecodable message: %s", exc)

    async def get(self, timeout_s: float) -> Message:
        """The next event; ``TimeoutError`` when none comes within ``timeout_s``."""
        return await asyncio.wait_for(self._received.get(), timeout_s)
