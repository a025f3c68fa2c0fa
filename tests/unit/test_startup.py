"""faxbox.shared.startup: what is waited out at start-up, and for how long."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from faxbox.shared import startup


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_an_outage_is_waited_out_at_a_capped_backoff() -> None:
    clock = Clock()
    failures = 8

    async def connect() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise ServerSelectionTimeoutError("no server")
        return "connected"

    got = await startup.wait_for(
        "database", "mongodb://db/", connect, timeout_s=0, sleep=clock.sleep, clock=clock
    )
    assert got == "connected"
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert startup.WAITING.labels("database")._value.get() == 0


async def test_the_bound_ends_the_wait_with_the_last_error() -> None:
    clock = Clock()

    async def connect() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        await startup.wait_for(
            "broker", "amqp://mq/", connect, timeout_s=20, sleep=clock.sleep, clock=clock
        )
    assert sum(clock.sleeps) <= 20
    assert len(clock.sleeps) == 5  # 0.5 + 1 + 2 + 4 + 8 = 15.5; another 10 would pass 20


async def test_what_waiting_cannot_heal_is_raised_at_once() -> None:
    tries = 0

    async def connect() -> None:
        nonlocal tries
        tries += 1
        raise OperationFailure("Authentication failed.", code=18)

    with pytest.raises(OperationFailure):
        await startup.wait_for("database", "mongodb://db/", connect, timeout_s=0)
    assert tries == 1


def test_addresses_are_logged_without_credentials() -> None:
    assert (
        startup.without_credentials("mongodb://user:pw@db.example:27017/faxbox?tls=true")
        == "mongodb://db.example:27017/faxbox"
    )
    assert (
        startup.without_credentials("amqp://u:p@a:5672/vh, amqp://u:p@b:5672/vh")
        == "amqp://a:5672/vh, amqp://b:5672/vh"
    )
