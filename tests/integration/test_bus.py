"""The bus against a real RabbitMQ, each test under its own prefix in a fresh vhost."""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import DeliveryError, PublishError

from faxbox.shared import delays, notes
from faxbox.shared.bus import (
    ATTEMPT_HEADER,
    ERROR_KIND_HEADER,
    ORIGIN_QUEUE_HEADER,
    REASON_HEADER,
    Bus,
    PermanentError,
    RetryLater,
    TransientError,
)
from faxbox.shared.contracts import (
    MailReceived,
    NotificationKind,
    NotificationSent,
)
from faxbox.shared.policy import Attempts
from faxbox.shared.settings import BrokerSettings
from tests.support import RabbitServer
from tests.support import sample_mail_received as mail

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(broker_settings: BrokerSettings) -> AsyncIterator[Bus]:
    b = Bus(broker_settings)
    await b.connect()
    await b.declare_service("validator")
    yield b
    await b.close()


async def get_one(bus: Bus, queue_name: str, within_s: float = 10.0) -> AbstractIncomingMessage:
    """Poll a queue with basic.get until a message is there (acked on return)."""
    channel = await bus.connection.channel()
    queue = await channel.get_queue(queue_name)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        incoming = await queue.get(no_ack=True, fail=False)
        if incoming is not None:
            await channel.close()
            return incoming
        await asyncio.sleep(0.05)
    await channel.close()
    raise AssertionError(f"nothing arrived on {queue_name} within {within_s}s")


async def queue_depth(bus: Bus, queue_name: str) -> int:
    channel = await bus.connection.channel()
    queue = await channel.declare_queue(queue_name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count or 0


async def test_publish_is_confirmed_and_routed_to_the_subscribed_queue(bus: Bus) -> None:
    message = mail()
    await bus.publish(message)
    incoming = await get_one(bus, bus.topology.queue("validator"))
    assert incoming.type == "MailReceived"
    assert incoming.correlation_id == "fax1"
    assert incoming.message_id == message.message_id
    assert MailReceived.model_validate_json(incoming.body) == message


async def test_unroutable_publish_is_an_error(bus: Bus) -> None:
    # Nobody subscribes to NotificationSent except history, which is not declared here.
    note = NotificationSent(
        fax_id="fax1",
        account_id="a1",
        month="202611",
        kind=NotificationKind.sent,
        recipients=("a@example.com",),
        smtp_message_id="<m@x>",
    )
    with pytest.raises((DeliveryError, PublishError)):
        await bus.publish(note)


async def test_handled_message_is_acked(bus: Bus) -> None:
    seen: list[MailReceived] = []
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        seen.append(message)
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(7))
    await asyncio.wait_for(done.wait(), 10)
    await consumer.stop()
    assert [m.uid for m in seen] == [7]
    assert await queue_depth(bus, bus.topology.queue("validator")) == 0
    assert await queue_depth(bus, bus.topology.dead_letter_queue("validator")) == 0


async def test_permanent_error_lands_in_dead_letter_queue_with_reason(bus: Bus) -> None:
    async def handle(message: MailReceived) -> None:
        raise PermanentError("the sender is not known to any account")

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(2))
    dead = await get_one(bus, bus.topology.dead_letter_queue("validator"))
    await consumer.stop()
    headers = dead.headers or {}
    assert headers[REASON_HEADER] == "the sender is not known to any account"
    assert headers[ERROR_KIND_HEADER] == "permanent"
    assert headers[ORIGIN_QUEUE_HEADER] == bus.topology.queue("validator")
    assert MailReceived.model_validate_json(dead.body).uid == 2
    assert await queue_depth(bus, bus.topology.queue("validator")) == 0


async def test_transient_error_comes_back_after_the_retry_delay_with_attempt_count(
    bus: Bus,
) -> None:
    arrivals: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        arrivals.append((time.monotonic(), len(arrivals) + 1))
        if len(arrivals) < 3:
            raise TransientError("database briefly unavailable")
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(3))
    await asyncio.wait_for(done.wait(), 20)
    await consumer.stop()
    assert len(arrivals) == 3
    first_gap = arrivals[1][0] - arrivals[0][0]
    second_gap = arrivals[2][0] - arrivals[1][0]
    # retry_delays_s=(1, 2): the broker holds the copy for the TTL of each retry queue.
    assert 0.9 <= first_gap < 5
    assert 1.9 <= second_gap < 6
    assert await queue_depth(bus, bus.topology.dead_letter_queue("validator")) == 0


async def test_attempt_header_is_counted_on_each_retry(bus: Bus) -> None:
    attempts: list[int] = []
    done = asyncio.Event()
    channel = await bus.connection.channel()
    queue = await channel.get_queue(bus.topology.queue("validator"))
    # What moves a due retry home (a Consumer runs one for its service).
    releaser = delays.Releaser(bus, "validator")
    await releaser.start()

    async def spy(incoming: AbstractIncomingMessage) -> None:
        attempt = (incoming.headers or {}).get(ATTEMPT_HEADER, 0)
        assert isinstance(attempt, int)
        attempts.append(attempt)
        if len(attempts) < 2:
            step = await bus.retry(incoming, "validator", 1, Attempts(transient=attempts[-1] + 1))
            await releaser.watch(step)
        else:
            done.set()
        await incoming.ack()

    tag = await queue.consume(spy)
    await bus.publish(mail(4))
    await asyncio.wait_for(done.wait(), 10)
    await queue.cancel(tag)
    await releaser.stop()
    await channel.close()
    assert attempts == [1, 2]


async def test_exhausted_transient_retries_are_dead_lettered(bus: Bus) -> None:
    calls = 0

    async def handle(message: MailReceived) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(5))
    dead = await get_one(bus, bus.topology.dead_letter_queue("validator"), within_s=20)
    await consumer.stop()
    assert calls == bus.settings.max_transient_attempts
    headers = dead.headers or {}
    assert headers[ERROR_KIND_HEADER] == "exhausted"
    assert "RuntimeError: boom" in str(headers[REASON_HEADER])


async def test_retry_later_uses_its_own_delay(bus: Bus) -> None:
    times: list[float] = []
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        times.append(time.monotonic())
        if len(times) == 1:
            raise RetryLater("line busy, redial", delay_s=3)
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(6))
    await asyncio.wait_for(done.wait(), 15)
    await consumer.stop()
    assert 2.9 <= times[1] - times[0] < 8
    channel = await bus.connection.channel()
    await channel.declare_queue(bus.topology.retry_queue("validator", 3), passive=True)
    await channel.close()


async def test_undecodable_message_is_dead_lettered_and_consumer_goes_on(bus: Bus) -> None:
    handled = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        handled.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    channel = await bus.connection.channel()
    default = channel.default_exchange
    await default.publish(
        aio_pika.Message(body=b"{not json", type="MailReceived"),
        routing_key=bus.topology.queue("validator"),
    )
    await default.publish(
        aio_pika.Message(body=b"{}", type="NoSuchContract"),
        routing_key=bus.topology.queue("validator"),
    )
    await channel.close()
    await bus.publish(mail(8))
    await asyncio.wait_for(handled.wait(), 10)
    first = await get_one(bus, bus.topology.dead_letter_queue("validator"))
    second = await get_one(bus, bus.topology.dead_letter_queue("validator"))
    await consumer.stop()
    reasons = sorted(str((m.headers or {})[REASON_HEADER]) for m in (first, second))
    assert "body is not a valid MailReceived" in reasons[0]
    assert "unknown message type 'NoSuchContract'" in reasons[1]


CRASHING_CONSUMER = """
import asyncio, sys
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import MailReceived
from faxbox.shared.settings import BrokerSettings

async def main() -> None:
    bus = Bus(BrokerSettings.model_validate_json(sys.argv[1]))
    await bus.connect()

    async def hang(message: MailReceived) -> None:
        print("got", message.uid, flush=True)
        await asyncio.sleep(3600)

    await bus.consumer("validator", {MailReceived: hang}).start()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_unacked_message_is_redelivered_after_the_consumer_process_dies(
    broker_settings: BrokerSettings, bus: Bus
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_CONSUMER,
        broker_settings.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        await bus.publish(mail(9))
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"got 9\n"
    finally:
        proc.kill()  # SIGKILL: no ack, no clean close, as in a crash
        await proc.wait()

    redelivered: list[AbstractIncomingMessage] = []
    got = asyncio.Event()
    channel = await bus.connection.channel()
    queue = await channel.get_queue(bus.topology.queue("validator"))

    async def watch(incoming: AbstractIncomingMessage) -> None:
        redelivered.append(incoming)
        await incoming.ack()
        got.set()

    tag = await queue.consume(watch)
    await asyncio.wait_for(got.wait(), 15)
    await queue.cancel(tag)
    await channel.close()
    assert len(redelivered) == 1
    assert redelivered[0].redelivered
    assert MailReceived.model_validate_json(redelivered[0].body).uid == 9


async def test_graceful_stop_finishes_the_message_in_hand(bus: Bus) -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def slow(message: MailReceived) -> None:
        started.set()
        await asyncio.sleep(1)
        finished.append(message.uid)

    consumer = bus.consumer("validator", {MailReceived: slow})
    await consumer.start()
    await bus.publish(mail(10))
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(grace_s=10)
    assert finished == [10]
    assert await queue_depth(bus, bus.topology.queue("validator")) == 0


async def test_redrive_moves_dead_letters_back_to_the_queue(bus: Bus) -> None:
    fixed = False
    handled: list[int] = []
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        if not fixed:
            raise PermanentError("template missing")
        handled.append(message.uid)
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(11))
    deadline = time.monotonic() + 10
    while await queue_depth(bus, bus.topology.dead_letter_queue("validator")) < 1:
        assert time.monotonic() < deadline, "message never reached the dead-letter queue"
        await asyncio.sleep(0.05)
    fixed = True
    assert await bus.redrive("validator") == 1
    await asyncio.wait_for(done.wait(), 10)
    await consumer.stop()
    assert handled == [11]
    assert await queue_depth(bus, bus.topology.dead_letter_queue("validator")) == 0


async def test_redrive_is_bounded_and_never_loops_on_what_fails_again(bus: Bus) -> None:
    failures: list[int] = []

    async def handle(message: MailReceived) -> None:
        failures.append(message.uid)
        raise PermanentError("still broken")

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    dlq = bus.topology.dead_letter_queue("validator")
    for uid in range(5):
        await bus.publish(mail(100 + uid))
    deadline = time.monotonic() + 10
    while await queue_depth(bus, dlq) < 5:
        assert time.monotonic() < deadline, "messages never reached the dead-letter queue"
        await asyncio.sleep(0.05)

    assert await bus.redrive("validator", limit=2) == 2
    # Every message fails again at once and is dead-lettered behind the others while the
    # run goes on: an unbounded run still moves only the five that were there.
    moved = await asyncio.wait_for(bus.redrive("validator"), 20)
    assert moved <= 5
    await asyncio.sleep(0.5)
    await consumer.stop()
    assert len(failures) <= 5 + 2 + 5
    assert await queue_depth(bus, dlq) == 5


async def test_retry_later_does_not_use_up_the_transient_budget(bus: Bus) -> None:
    calls = 0
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        nonlocal calls
        calls += 1
        # More scheduled retries than the transient limit (3), then one transient error:
        # the message must still be handled, not dead-lettered.
        if calls <= 4:
            raise RetryLater("line busy, redial", delay_s=1)
        if calls == 5:
            raise TransientError("database blip")
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(12))
    await asyncio.wait_for(done.wait(), 30)
    await consumer.stop()
    assert calls == 6
    assert await queue_depth(bus, bus.topology.dead_letter_queue("validator")) == 0


async def notes_seen(bus: Bus, number: int, failures: list[Exception]) -> list[dict[str, str]]:
    """The notes each delivery of one mail carried, its handler raising ``failures`` in
    turn, then returning."""
    seen: list[dict[str, str]] = []
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        seen.append(dict(notes.carried()))
        if len(seen) <= len(failures):
            raise failures[len(seen) - 1]
        done.set()

    consumer = bus.consumer("validator", {MailReceived: handle})
    await consumer.start()
    await bus.publish(mail(number))
    await asyncio.wait_for(done.wait(), 30)
    await consumer.stop()
    return seen


async def test_notes_travel_with_a_retried_message_and_stay_with_it(bus: Bus) -> None:
    blip = TransientError("a blip")  # waited out
    blip.__cause__ = ConnectionResetError()
    seen = await notes_seen(
        bus,
        13,
        [
            RetryLater("the database is away", delay_s=1, notes={"pages": "3"}),
            blip,
            RetryLater("again", delay_s=1, notes={"pages": "4", "by": "w2"}),
        ],
    )
    assert seen == [{}, {"pages": "3"}, {"pages": "3"}, {"pages": "4", "by": "w2"}]
    assert notes.carried() == {}


async def test_notes_are_not_dropped_when_parking_their_copy_fails_for_a_while(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node going away: the first two parkings fail. Requeued, the delivery would come
    # back without its notes; the copy with them is parked once the broker takes it.
    real_retry = bus.retry
    failures = 2

    async def flaky_retry(*args: Any, **kwargs: Any) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionResetError("the held queue's leader went away")
        return await real_retry(*args, **kwargs)

    monkeypatch.setattr(bus, "retry", flaky_retry)
    away = RetryLater("the database is away", delay_s=1, notes={"pages": "3"})
    assert await notes_seen(bus, 14, [away]) == [{}, {"pages": "3"}]
    assert failures == 0


async def test_a_handler_in_hand_runs_to_its_end_when_the_broker_drops_the_connection(
    bus: Bus, rabbit: RabbitServer, vhost: str
) -> None:
    """A broker restart must not cancel work in hand (a call on the line that has just
    reached the far end would be dialled again). The handler finishes and records its
    outcome; its ack is lost with the channel, and the broker delivers the message again,
    which every handler tolerates."""
    release = asyncio.Event()
    calls: list[str] = []

    async def on_the_line(message: MailReceived) -> None:
        calls.append("started")
        try:
            await release.wait()
        except asyncio.CancelledError:
            calls.append("cancelled")
            raise
        calls.append("finished")

    consumer = bus.consumer("validator", {MailReceived: on_the_line})
    await consumer.start()
    try:
        await bus.publish(mail(21))
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.05)
        assert calls == ["started"]
        quoted = urllib.parse.quote(vhost, "")
        connections: object = []
        for _ in range(100):  # the management API lists a connection after a stats tick
            connections = rabbit.api("GET", f"/api/vhosts/{quoted}/connections")
            if connections:
                break
            await asyncio.sleep(0.2)
        assert isinstance(connections, list)
        assert connections
        for connection in connections:
            name = urllib.parse.quote(connection["name"], "")
            rabbit.api("DELETE", f"/api/connections/{name}")
        await asyncio.sleep(0.5)
        release.set()
        # Delivered again once the robust connection is back: started, finished, started…
        for _ in range(300):
            if calls.count("finished") >= 2:
                break
            await asyncio.sleep(0.05)
        assert "cancelled" not in calls
        assert calls.count("finished") >= 2
    finally:
        release.set()
        await consumer.stop(grace_s=10)


async def test_an_outage_longer_than_the_retry_budget_is_waited_out_not_dead_lettered(
    broker_settings: BrokerSettings,
) -> None:
    from pymongo.errors import AutoReconnect

    settings = broker_settings.model_copy(update={"infrastructure_backoff_max_s": 1})
    b = Bus(settings)
    await b.connect()
    calls = 0
    done = asyncio.Event()

    async def handle(message: MailReceived) -> None:
        nonlocal calls
        calls += 1
        # The database is away for twice the transient budget (3 attempts here).
        if calls <= 2 * settings.max_transient_attempts:
            raise AutoReconnect("connection refused")
        done.set()

    consumer = b.consumer("validator", {MailReceived: handle})
    await consumer.start()
    try:
        await b.publish(mail(31))
        await asyncio.wait_for(done.wait(), 40)
    finally:
        await consumer.stop()
    assert calls == 2 * settings.max_transient_attempts + 1
    assert await queue_depth(b, b.topology.dead_letter_queue("validator")) == 0
    await b.close()
