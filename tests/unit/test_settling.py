from __future__ import annotations

import asyncio

import pytest

from faxbox.shared.settling import Settlements

Sent = tuple[str, int, bool]  # ("ack" | "nack", tag, multiple or requeue)


class RecordingChannel:
    """Writes nothing; remembers the frames in the order they would go out."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Sent] = []
        self.fail = fail

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("channel closed")
        self.sent.append(("ack", delivery_tag, multiple))

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        assert not multiple
        await asyncio.sleep(0)
        self.sent.append(("nack", delivery_tag, requeue))


def received(settlements: Settlements, tags: range) -> None:
    for tag in tags:
        settlements.received(tag)


def broker_view(sent: list[Sent], delivered: range) -> dict[int, str]:
    """What RabbitMQ makes of the frames: each tag's fate; an unknown tag is an error."""
    outstanding = set(delivered)
    fate: dict[int, str] = {}
    for kind, tag, flag in sent:
        assert tag in outstanding, f"{kind} of unknown delivery tag {tag} closes the channel"
        covered = {t for t in outstanding if t <= tag} if kind == "ack" and flag else {tag}
        for t in covered:
            fate[t] = kind
        outstanding -= covered
    return fate


async def test_acks_decided_together_go_out_as_one_multiple_ack() -> None:
    channel = RecordingChannel()
    settlements = Settlements(channel)
    received(settlements, range(1, 501))
    await asyncio.gather(*(settlements.ack(tag) for tag in range(1, 501)))
    assert channel.sent == [("ack", 500, True)]
    assert settlements.in_hand == 0


async def test_a_delivery_still_in_hand_is_never_covered_by_a_multiple_ack() -> None:
    channel = RecordingChannel()
    settlements = Settlements(channel)
    received(settlements, range(1, 11))
    await asyncio.gather(*(settlements.ack(tag) for tag in [1, 2, 3, 5, 6, 7]))
    # 4 is still being handled: 1-3 as one frame, 5-7 one by one.
    assert channel.sent == [
        ("ack", 3, True),
        ("ack", 5, False),
        ("ack", 6, False),
        ("ack", 7, False),
    ]
    assert broker_view(channel.sent, range(1, 11)) == {t: "ack" for t in [1, 2, 3, 5, 6, 7]}
    assert settlements.in_hand == 4  # 4, 8, 9, 10

    await asyncio.gather(*(settlements.ack(tag) for tag in [4, 8, 9, 10]))
    assert channel.sent[4:] == [("ack", 10, True)]
    assert broker_view(channel.sent, range(1, 11)) == {t: "ack" for t in range(1, 11)}


async def test_a_nack_between_acks_stays_a_nack() -> None:
    channel = RecordingChannel()
    settlements = Settlements(channel)
    received(settlements, range(1, 7))
    await asyncio.gather(
        *(settlements.ack(tag) for tag in [1, 2, 4, 5, 6]),
        settlements.nack(3, requeue=True),
    )
    assert channel.sent == [("ack", 2, True), ("nack", 3, True), ("ack", 6, True)]
    fate = broker_view(channel.sent, range(1, 7))
    assert fate == {1: "ack", 2: "ack", 3: "nack", 4: "ack", 5: "ack", 6: "ack"}


async def test_decisions_made_while_frames_are_written_follow_in_order() -> None:
    channel = RecordingChannel()
    settlements = Settlements(channel)
    received(settlements, range(1, 5))
    first = asyncio.create_task(settlements.ack(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the sender is now writing the frame of 1
    late = [asyncio.create_task(settlements.ack(t)) for t in (2, 3)]
    await asyncio.gather(first, *late, settlements.nack(4, requeue=False))
    assert broker_view(channel.sent, range(1, 5)) == {1: "ack", 2: "ack", 3: "ack", 4: "nack"}


async def test_an_unannounced_delivery_is_settled_alone() -> None:
    channel = RecordingChannel()
    settlements = Settlements(channel)
    received(settlements, range(2, 4))
    await asyncio.gather(settlements.ack(1), settlements.ack(2), settlements.ack(3))
    assert channel.sent[0] == ("ack", 1, False)
    assert broker_view(channel.sent, range(1, 4)) == {1: "ack", 2: "ack", 3: "ack"}


async def test_a_failed_write_reaches_every_waiter_of_its_frame() -> None:
    settlements = Settlements(RecordingChannel(fail=True))
    received(settlements, range(1, 4))
    outcomes = await asyncio.gather(
        *(settlements.ack(tag) for tag in range(1, 4)), return_exceptions=True
    )
    assert [type(o) for o in outcomes] == [ConnectionError] * 3


async def test_settling_a_delivery_twice_is_refused() -> None:
    settlements = Settlements(RecordingChannel())
    settlements.received(1)
    pending = asyncio.create_task(settlements.ack(1))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="already settled"):
        await settlements.nack(1)
    await pending
