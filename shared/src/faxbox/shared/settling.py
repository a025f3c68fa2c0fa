"""Settling a channel's deliveries in as few frames as possible, never out of order.

A consumer that finishes many deliveries at once (the history-writer acks a whole batch
after its bulk write) used to send one ``basic.ack`` per delivery. For a quorum queue
each ack is a command through the queue's Raft log: measured here, consuming 20,000
messages cost RabbitMQ 0.086 ms of CPU per message acked one by one and 0.011 ms acked
500 at a time with ``multiple``, and the client 0.115 against 0.07 ms.

``multiple`` acks every delivery of the channel up to the tag, so it may only cover
deliveries this process has decided to ack. :class:`Settlements` therefore knows every
delivery in hand (``received``, called before the handler starts) and folds acks into
one ``multiple`` frame only across a run with no delivery still being handled and no
nack in between. Everything else goes out as before, one frame per delivery. One task
sends the frames of a channel in order, so a nack is on the wire before any later
``multiple`` ack whose range includes its tag (the broker would otherwise ack it, then
close the channel on the nack of an unknown tag).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol


class SettlingChannel(Protocol):
    """The two channel methods used (aiormq's ``Channel`` has them)."""

    def basic_ack(
        self, delivery_tag: int, multiple: bool = ..., wait: bool = ...
    ) -> Awaitable[None]: ...

    def basic_nack(
        self, delivery_tag: int, multiple: bool = ..., requeue: bool = ..., wait: bool = ...
    ) -> Awaitable[None]: ...


@dataclass(slots=True)
class _Decision:
    future: asyncio.Future[None]
    requeue: bool | None  # None: ack


@dataclass(slots=True)
class Frame:
    """One ack (``multiple`` up to ``tag``) or one nack, and who waits for it."""

    tag: int
    multiple: bool = False
    requeue: bool | None = None  # None: ack
    waiting: list[asyncio.Future[None]] = field(default_factory=list)


class Settlements:
    """The deliveries of one channel: known from receipt, settled in order."""

    def __init__(self, channel: SettlingChannel) -> None:
        self.channel = channel
        # delivery tag -> decision, None while its handler runs. Tags grow with each
        # delivery and are added in that order, so iteration order is tag order.
        self._in_hand: dict[int, _Decision | None] = {}
        # Settled without ``received`` first: sent alone, never inside a multiple ack.
        self._unannounced: list[Frame] = []
        self._sender: asyncio.Task[None] | None = None

    def received(self, tag: int) -> None:
        """Call before anything else happens to the delivery (before any ``await``)."""
        self._in_hand.setdefault(tag, None)

    @property
    def in_hand(self) -> int:
        return len(self._in_hand)

    async def ack(self, tag: int) -> None:
        """Returns once the ack (perhaps folded into a ``multiple`` one) is on its way."""
        await self._decide(tag, None)

    async def nack(self, tag: int, *, requeue: bool = True) -> None:
        await self._decide(tag, requeue)

    async def _decide(self, tag: int, requeue: bool | None) -> None:
        if self._in_hand.get(tag) is not None:
            raise ValueError(f"delivery {tag} is already settled")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if tag in self._in_hand:
            self._in_hand[tag] = _Decision(future, requeue)
        else:
            self._unannounced.append(Frame(tag, requeue=requeue, waiting=[future]))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await future

    async def _send(self) -> None:
        # One turn of the loop first: the deliveries whose handlers finish together
        # (a batch written at once) decide in this turn and share the frame.
        await asyncio.sleep(0)
        while frames := self.take_frames():
            for frame in frames:
                try:
                    await self._write(frame)
                except Exception as exc:
                    _resolve(frame.waiting, exc)
                else:
                    _resolve(frame.waiting, None)

    async def _write(self, frame: Frame) -> None:
        # wait=False: queued on the connection's writer, in this order, without waiting
        # a turn of the loop for each frame to be written. A frame lost with the
        # connection is a delivery the broker gives again, as an ack lost in flight is.
        if frame.requeue is None:
            await self.channel.basic_ack(
                delivery_tag=frame.tag, multiple=frame.multiple, wait=False
            )
        else:
            await self.channel.basic_nack(
                delivery_tag=frame.tag, multiple=False, requeue=frame.requeue, wait=False
            )

    def take_frames(self) -> list[Frame]:
        """The frames for every decided delivery, removed from the ones in hand."""
        frames, self._unannounced = self._unannounced, []
        run: Frame | None = None  # acks that can share one multiple frame
        nothing_undecided_before = True
        for tag, decision in list(self._in_hand.items()):
            if decision is None:
                nothing_undecided_before = False
                run = None
                continue
            del self._in_hand[tag]
            if decision.requeue is not None:
                run = None
                frames.append(Frame(tag, requeue=decision.requeue, waiting=[decision.future]))
            elif run is not None:
                run.tag = tag
                run.multiple = True
                run.waiting.append(decision.future)
            else:
                frame = Frame(tag, waiting=[decision.future])
                frames.append(frame)
                if nothing_undecided_before:
                    run = frame
        return frames


def _resolve(waiting: list[asyncio.Future[None]], exc: Exception | None) -> None:
    for future in waiting:
        settle(future, exc)


def settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    """Complete ``future`` with ``exc`` or a result, unless it is already done.

    (A waiter cancelled meanwhile has cancelled its future: there is nothing to tell it.)
    """
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
