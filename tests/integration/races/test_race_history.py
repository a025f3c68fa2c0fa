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
        history_retention_interval_s=0,
        history_single_writer="on",
        history_lease_ttl_s=1.5,
    )
    account = f"acc{uuid.uuid4().hex[:6]}"
    store = await Store.connect(mongo)
    bus = Bus(settings)
    replicas = [contextlib.AsyncExitStack() for _ in range(CONTENDERS)]
    most_consumers = 0
    try:
        stories: dict[str, list[FaxMessage]] = {
            "sent": outbound_sent("x", account, T0),
            "failed": outbound_failed("x", account, T0),
        }
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
            # The first replica writes alone before the others start (so stopping it is
            # a handover): what one writer makes of each story is what all must make.
            await replicas[0].enter_async_context(service(Runtime("history"), settings))
            await wait_for(lambda: _true(consumers(rabbit, settings) == 1), 10)
            expected: dict[str, object] = {}
            for name, story in stories.items():
                for event in renamed(story, f"ref_{name}"):
                    await bus.publish(event)
                expected[name] = await written_whole(store, account, f"ref_{name}", len(story))
            for replica in replicas[1:]:
                await replica.enter_async_context(service(Runtime("history"), settings))
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


async def written_whole(store: Store, account: str, fax_id: str, events: int) -> object:
    """The fax's document once its timeline holds every event."""

    async def whole() -> bool:
        doc = await fetch(store, account, "202611", fax_id)
        return doc is not None and len(doc.get("timeline") or ()) == events

    await wait_for(whole, 30)
    return normal(await fetch(store, account, "202611", fax_id))


async def _true(value: bool) -> bool:
    return value
