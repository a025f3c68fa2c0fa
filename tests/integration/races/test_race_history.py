"""Twelve history replicas on FerretDB, each with its own broker and database
connections, consuming one stream of events while replica after replica stops: at no
moment do two of them consume, and every fax ends as exactly one history document equal
to what a single writer makes of its events (no lost timeline entry or counter)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import urllib.error
import uuid

import pytest

from faxbox.history.service import Settings, service
from faxbox.history.single_writer import COLLECTION as LEASES
from faxbox.history.single_writer import LEASE_NAME
from faxbox.history.writer import MongoHistoryWriter
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import FaxMessage
from faxbox.shared.runner import Runtime
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from tests.integration.history._events import outbound_failed, outbound_sent
from tests.integration.history.test_history_replicas import consumers
from tests.integration.history.test_history_writer import (
    T0,
    fetch,
    normal,
    renamed,
    wait_for,
    write_one_by_one,
)
from tests.integration.races.conftest import CONTENDERS, Contenders
from tests.support import RabbitServer

pytestmark = pytest.mark.integration

FAXES = 24


async def test_twelve_history_replicas_write_each_fax_once_and_lose_nothing(
    rabbit: RabbitServer, broker_settings: BrokerSettings, contenders: Contenders
) -> None:
    mongo = MongoSettings(mongo_url=contenders.url, mongo_db=contenders.db_name)
    settings = Settings(
        **broker_settings.model_dump(exclude={"prefetch"}),
        **mongo.model_dump(),
        retention_interval_s=0,
        history_single_writer="on",
        history_lease_ttl_s=1.5,
    )
    account = f"acc{uuid.uuid4().hex[:6]}"
    store = await Store.connect(mongo)
    bus = Bus(settings)
    replicas = [contextlib.AsyncExitStack() for _ in range(CONTENDERS)]
    most_consumers = 0
    try:
        # What one writer alone makes of each story.
        reference = MongoHistoryWriter(store.history)
        stories: dict[str, list[FaxMessage]] = {
            "sent": outbound_sent("x", account, T0),
            "failed": outbound_failed("x", account, T0),
        }
        expected: dict[str, object] = {}
        for name, story in stories.items():
            await write_one_by_one(reference, renamed(story, f"ref_{name}"))
            expected[name] = normal(await fetch(store, account, "202611", f"ref_{name}"))
        rng = random.Random(18)
        kinds = {f"fax_{i:02d}": ("sent", "failed")[i % 2] for i in range(FAXES)}
        events = [e for fax, kind in kinds.items() for e in renamed(stories[kind], fax)]
        events += rng.sample(events, len(events) // 3)  # redeliveries
        rng.shuffle(events)

        await bus.connect()

        async def watch() -> None:
            nonlocal most_consumers
            while True:
                with contextlib.suppress(urllib.error.HTTPError):  # no queue yet
                    now = await asyncio.to_thread(consumers, rabbit, settings)
                    most_consumers = max(most_consumers, now)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            # The first replica writes before the others start: stopping it is a handover.
            for n, replica in enumerate(replicas):
                await replica.enter_async_context(service(Runtime("history"), settings))
                if n == 0:
                    await wait_for(lambda: _true(consumers(rabbit, settings) == 1), 10)
            # Replicas stop one after another (a graceful stop releases the lease, so
            # a standby takes over at once) while events keep coming.
            batches = [events[i::CONTENDERS] for i in range(CONTENDERS)]
            for replica, batch in zip(replicas[:-1], batches, strict=False):
                await asyncio.gather(*(bus.publish(e) for e in batch))
                await asyncio.sleep(0.2)
                await replica.aclose()
            await asyncio.gather(*(bus.publish(e) for e in batches[-1]))

            async def all_written() -> bool:
                for fax, kind in kinds.items():
                    doc = await fetch(store, account, "202611", fax)
                    if doc is None or normal(doc) != expected[kind]:
                        return False
                return True

            await wait_for(all_written, 60)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        assert most_consumers == 1, f"{most_consumers} replicas consumed at once"
        written = store.history.collection(account, "202611")
        assert await written.count_documents({"_id": {"$in": list(kinds)}}) == FAXES
        # The lease passed on at least once (a generation per holder, none shared).
        head = await store.db[LEASES].find_one({"_id": LEASE_NAME})
        assert head is not None
        assert head["generation"] >= 2
    finally:
        for replica in replicas:
            await replica.aclose()
        await bus.close()
        await store.close()


async def _true(value: bool) -> bool:
    return value
