"""Two history-writers on FerretDB: one writes at a time (the writer lease), the other
takes over when it stops or dies, and every fax's document ends as one writer would
have left it, with events published across the handover."""

from __future__ import annotations

import asyncio
import contextlib
import random
import urllib.parse
import uuid

from faxbox.history.adapters import MongoHistoryWriter
from faxbox.history.service import Settings, service
from faxbox.shared.bus import Bus
from faxbox.shared.routing import Topology
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from tests.integration.history._events import outbound_sent
from tests.integration.history.test_history_writer import (
    T0,
    fetch,
    normal,
    renamed,
    wait_for,
    write_one_by_one,
)
from tests.support import RabbitServer

FAXES = 12


def consumers(rabbit: RabbitServer, settings: BrokerSettings) -> int:
    vhost = urllib.parse.urlsplit(settings.amqp_url).path.lstrip("/")
    queue = Topology(settings.exchange_prefix).queue("history")
    found = rabbit.api(
        "GET", f"/api/queues/{urllib.parse.quote(urllib.parse.unquote(vhost), '')}/{queue}"
    )
    assert isinstance(found, dict)
    return int(found.get("consumers") or 0)


async def test_one_writer_at_a_time_and_a_standby_takes_over(
    rabbit: RabbitServer,
    broker_settings: BrokerSettings,
    mongo_settings: MongoSettings,
    store: Store,
) -> None:
    settings = Settings(
        **broker_settings.model_dump(exclude={"prefetch"}),
        **mongo_settings.model_dump(),
        history_retention_interval_s=0,
        history_single_writer="on",
        history_lease_ttl_s=2.0,
    )
    account = f"acc{uuid.uuid4().hex[:6]}"
    story = outbound_sent("x", account, T0)
    await write_one_by_one(MongoHistoryWriter(store.history), renamed(story, "fax_ref"))
    expected = normal(await fetch(store, account, "202611", "fax_ref"))
    stories = [renamed(story, f"fax_r{i}") for i in range(FAXES)]
    events = [e for story in stories for e in story]
    random.Random(3).shuffle(events)

    bus = Bus(settings)
    await bus.connect()
    first = contextlib.AsyncExitStack()
    try:
        await first.enter_async_context(service(Runtime("history"), settings))
        async with service(Runtime("history"), settings):
            await wait_for(lambda: _true(consumers(rabbit, settings) == 1), 10)
            half = len(events) // 2
            await asyncio.gather(*(bus.publish(e) for e in events[:half]))
            await asyncio.sleep(1.0)
            assert consumers(rabbit, settings) == 1  # the standby never consumed
            # The writer stops (and releases): the standby takes over, at once.
            await first.aclose()
            await asyncio.gather(*(bus.publish(e) for e in events[half:]))
            await wait_for(lambda: _true(consumers(rabbit, settings) == 1), 10)

            async def all_converged() -> bool:
                for i in range(FAXES):
                    doc = await fetch(store, account, "202611", f"fax_r{i}")
                    if doc is None or normal(doc) != expected:
                        return False
                return True

            await wait_for(all_converged, 30)
    finally:
        await first.aclose()
        await bus.close()


async def _true(value: bool) -> bool:
    return value
