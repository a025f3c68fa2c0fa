"""The carrier edge while the database does not answer: the last list read stands."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from faxbox.inbound.edge import CarrierEdge
from faxbox.shared.store import Carrier


class Carriers:
    def __init__(self) -> None:
        self.down = False
        self.hang = False
        self.reads = 0

    async def list_carriers(self, *, flag: str | None = None) -> list[Carrier]:
        self.reads += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
        return [Carrier(name="trunk", sip_host="127.0.0.1")]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_outage_keeps_the_carriers_known_before_it() -> None:
    carriers, clock = Carriers(), Clock()
    edge = CarrierEdge(carriers, refresh_s=5, refresh_timeout_s=0.05, clock=clock)
    assert (await edge.carrier_for("127.0.0.1")) is not None
    carriers.down = True
    clock.now = 10
    assert (await edge.carrier_for("127.0.0.1")) is not None
    assert (await edge.carrier_for("127.0.0.1")) is not None  # not asked again at once
    assert carriers.reads == 2
    carriers.down, carriers.hang = False, True  # a database that does not answer at all
    clock.now = 20
    assert (await edge.carrier_for("127.0.0.1")) is not None


async def test_with_nothing_known_yet_the_outage_is_raised() -> None:
    carriers = Carriers()
    carriers.down = True
    with pytest.raises(ServerSelectionTimeoutError):
        await CarrierEdge(carriers).known()
