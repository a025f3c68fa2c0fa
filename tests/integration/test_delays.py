"""Held retries on a real RabbitMQ: a releaser moves each home when it is due, hops a
wait longer than its queue's hold, and a copy held by a releaser that stops is moved by
another (which finds the held queue by itself)."""

from __future__ import annotations

import time

import pytest

from faxbox.shared import delays
from faxbox.shared.bus import Bus, encode
from tests.integration.test_bus import bus, get_one, queue_depth
from tests.support import sample_mail_received as mail

pytestmark = pytest.mark.integration

__all__ = ["bus"]  # the fixture: a bus with the validator's queues, as test_bus's tests get


async def hold(bus: Bus, step: int, due_in_s: float, uid: int) -> None:
    """A copy of a message in the held queue of ``step``, due in ``due_in_s``."""
    name = await bus.declare_held_queue("validator", step)
    message = encode(mail(uid))
    message.headers = {**(message.headers or {}), **delays.due_header(due_in_s)}
    channel = await bus.connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(message, routing_key=name)
    await channel.close()


async def test_a_held_copy_goes_home_when_due_without_its_due_header(bus: Bus) -> None:
    releaser = delays.Releaser(bus, "validator")
    await releaser.start()
    started = time.monotonic()
    await hold(bus, 2, 2, uid=40)
    await releaser.watch(2)
    home = await get_one(bus, bus.topology.queue("validator"), within_s=10)
    took = time.monotonic() - started
    await releaser.stop()
    assert 1.8 <= took < 6
    assert delays.DUE_HEADER not in (home.headers or {})
    assert await queue_depth(bus, bus.topology.retry_queue("validator", 2)) == 0


async def test_a_wait_longer_than_its_queue_holds_hops_and_is_still_on_time(bus: Bus) -> None:
    # Held in the 1 s queue but due in 4 s: held 1 s, then on to the 3 s queue.
    releaser = delays.Releaser(bus, "validator")
    await releaser.start()
    started = time.monotonic()
    await hold(bus, 1, 4, uid=41)
    await releaser.watch(1)
    await get_one(bus, bus.topology.queue("validator"), within_s=12)
    took = time.monotonic() - started
    await releaser.stop()
    assert 3.8 <= took < 8


async def test_a_copy_held_by_a_releaser_that_stops_is_moved_by_another(bus: Bus) -> None:
    first = delays.Releaser(bus, "validator")
    await first.start()
    started = time.monotonic()
    await hold(bus, 5, 3, uid=42)
    await first.watch(5)
    await first.stop()  # holding it: back to its queue
    assert await queue_depth(bus, bus.topology.queue("validator")) == 0
    # A fresh process: it finds the held queue itself, as a replica would.
    second = delays.Releaser(bus, "validator")
    await second.start()
    await get_one(bus, bus.topology.queue("validator"), within_s=10)
    took = time.monotonic() - started
    await second.stop()
    assert 2.8 <= took < 8


def test_waits_go_to_the_largest_step_not_above_them() -> None:
    assert delays.held_step(0.2) == 1
    assert delays.held_step(10) == 10
    assert delays.held_step(11) == 10
    assert delays.held_step(86400) == delays.MAX_HOLD_S
    assert delays.seconds_to_due({}) == 0.0
    assert 9 < delays.seconds_to_due(delays.due_header(10)) <= 10
