"""Retries that wait, moved home by the service itself when they are due.

A retry is a copy of the delivery in one of the service's held queues (a durable quorum
queue per step of the retry ladder, ``<prefix>.<service>.retry.<N>s.held``) with the moment
it is due in a header. Every consumer process of the service runs a :class:`Releaser`:
it holds the head of each held queue (prefetch 1; a queue fills in order of due time, as
every copy in it waits the same step), waits until it is due, publishes it (confirmed)
to the service's queue, then acks it. A crash between the two makes a duplicate, which
every handler tolerates; nothing is lost, and whichever replica is alive moves it.

Why not the broker's TTL and dead-lettering, as before: RabbitMQ 3.10's at-least-once
dead-lettering from a quorum queue can strand expired messages for good after leader
changes (rabbitmq-server issues 12625 and 16652). Measured in the long chaos run here:
after three node kills, 147 transmitter retries sat in ``retry.10s`` (147 messages, none
ready, no consumer can reach them) and those faxes never ended.

A delivery may stay unacked only so long (the broker's consumer timeout, 30 minutes by
default), so a hold lasts at most :data:`MAX_HOLD_S`; a longer wait hops: the copy goes
to the held queue of what remains, due time unchanged, until it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any, Final, Protocol

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from faxbox.shared.policy import RETRY_LADDER_S
from faxbox.shared.routing import Topology

log = logging.getLogger(__name__)

DUE_HEADER: Final = "x-faxbox-due-at"  # milliseconds since the epoch
MAX_HOLD_S: Final = 900
HELD_STEPS: Final[tuple[int, ...]] = tuple(s for s in RETRY_LADDER_S if s <= MAX_HOLD_S)
# How often a releaser looks for held queues another replica declared.
PROBE_S: Final = 15.0
# Closer to due than this is due: published now.
DUE_SLACK_S: Final = 0.05


def held_step(wait_s: float) -> int:
    """The held queue a wait of ``wait_s`` goes to: the largest step not above it (the
    first step for shorter waits)."""
    index = bisect_right(HELD_STEPS, wait_s) - 1
    return HELD_STEPS[max(index, 0)]


def due_header(wait_s: float) -> dict[str, int]:
    return {DUE_HEADER: int((time.time() + wait_s) * 1000)}


def seconds_to_due(headers: Mapping[str, Any] | None) -> float:
    due = (headers or {}).get(DUE_HEADER)
    if not isinstance(due, int):
        return 0.0  # no due time (a copy from before held queues): due now
    return due / 1000 - time.time()


class HoldingBus(Protocol):
    """What a releaser needs of the bus (``faxbox.shared.bus.Bus`` has it)."""

    topology: Topology

    @property
    def connection(self) -> AbstractRobustConnection: ...

    async def declare_held_queue(self, service: str, step: int) -> str: ...

    async def move(
        self, incoming: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """Publish a copy of ``incoming`` with ``headers`` to ``queue``, confirmed."""
        ...


class Releaser:
    """Moves a service's due retries home; one per consuming process."""

    def __init__(self, bus: HoldingBus, service: str) -> None:
        self.bus = bus
        self.service = service
        self._channel: AbstractChannel | None = None
        self._consuming: set[int] = set()
        self._holds: set[asyncio.Task[None]] = set()
        self._prober: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._channel = await self.bus.connection.channel()
        # Per consumer: each held queue's head waits alone, the rest behind it.
        await self._channel.set_qos(prefetch_count=1)
        await self._probe()
        self._prober = asyncio.create_task(self._probing())

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for task in list(self._holds):
            task.cancel()
        if self._holds:
            await asyncio.wait(self._holds, timeout=5)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()  # what was held goes back to its queue

    async def watch(self, step: int) -> None:
        """Consume the held queue of ``step`` (declared) if not yet."""
        async with self._lock:
            if step in self._consuming or self._channel is None:
                return
            name = await self.bus.declare_held_queue(self.service, step)
            queue = await self._channel.get_queue(name)
            await queue.consume(functools.partial(self._on_message, step=step))
            self._consuming.add(step)

    async def _probe(self) -> None:
        """Consume every held queue that exists (declared by any replica, or earlier)."""
        for step in HELD_STEPS:
            if step in self._consuming:
                continue
            if await self._exists(self.bus.topology.retry_queue(self.service, step)):
                await self.watch(step)

    async def _exists(self, name: str) -> bool:
        channel = await self.bus.connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
            return True
        except Exception:
            return False  # not found closes the channel
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _probing(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            try:
                await self._probe()
            except Exception as exc:
                log.warning("could not look for held queues of %s: %r", self.service, exc)

    async def _on_message(self, incoming: AbstractIncomingMessage, step: int) -> None:
        task = asyncio.create_task(self._hold(incoming, step))
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _hold(self, incoming: AbstractIncomingMessage, step: int) -> None:
        wait = seconds_to_due(incoming.headers)
        await asyncio.sleep(min(max(wait, 0.0), step))
        wait = seconds_to_due(incoming.headers)
        headers = dict(incoming.headers or {})
        try:
            if wait > DUE_SLACK_S:  # a wait longer than a hold: the next hop
                target = await self.bus.declare_held_queue(self.service, held_step(wait))
            else:
                headers.pop(DUE_HEADER, None)
                target = self.bus.topology.queue(self.service)
            await self.bus.move(incoming, target, headers)
        except Exception as exc:
            log.warning("could not move a due retry of %s (%r); it waits again", incoming.type, exc)
            with contextlib.suppress(Exception):
                await incoming.nack(requeue=True)
            return
        with contextlib.suppress(Exception):
            await incoming.ack()  # lost with the channel: moved twice, tolerated
        if target != self.bus.topology.queue(self.service):
            await self.watch(held_step(wait))
