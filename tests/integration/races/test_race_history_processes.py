"""Twelve history-writer processes on FerretDB; the one holding the writer lease is
killed (SIGKILL: no release, its unacked events come back) three times while events
flow. Each time exactly one other process takes over once the dead one's lease ran out,
and every fax ends as the one document a single writer makes of its events."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path

import pytest

from faxbox.history.single_writer import COLLECTION as LEASES
from faxbox.history.single_writer import LEASE_NAME
from faxbox.shared.bus import Bus
from faxbox.shared.contracts import FaxMessage
from faxbox.shared.settings import BrokerSettings, MongoSettings
from faxbox.shared.store import Store
from faxbox.shared.store.held import HeldLease
from tests.integration.history._events import outbound_failed, outbound_sent
from tests.integration.history.test_history_replicas import consumers
from tests.integration.history.test_history_writer import T0, fetch, normal, renamed, wait_for
from tests.integration.races.conftest import CONTENDERS, Contenders
from tests.integration.races.test_race_history import written_whole
from tests.support import RabbitServer

pytestmark = pytest.mark.integration

FAXES = 24
KILLS = 3
TTL_S = 2.0


class Writers:
    def __init__(self, broker: BrokerSettings, mongo: MongoSettings, logs: Path) -> None:
        self.env = {
            **os.environ,
            "FAXBOX_AMQP_URL": broker.amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": broker.exchange_prefix,
            "FAXBOX_MONGO_URL": mongo.mongo_url,
            "FAXBOX_MONGO_DB": mongo.mongo_db,
            "FAXBOX_HISTORY_SINGLE_WRITER": "on",
            "FAXBOX_HISTORY_LEASE_TTL_S": str(TTL_S),
            "FAXBOX_HISTORY_RETENTION_INTERVAL_S": "0",
        }
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"history-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "faxbox.history"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    async def ready(self) -> None:
        for n in range(len(self.procs)):
            await wait_for(partial(self._says_ready, n), 60)

    async def _says_ready(self, n: int) -> bool:
        return "service ready" in (self.logs / f"history-{n}.log").read_text()

    def by_pid(self, pid: int) -> subprocess.Popen[bytes]:
        return next(p for p in self.procs if p.pid == pid)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pid_of(holder: str) -> int:
    # The writer's holder name is <host>-<pid>-<random>.
    return int(holder.rsplit("-", 2)[1])


async def test_twelve_writer_processes_the_holder_killed_three_times_nothing_lost(
    rabbit: RabbitServer,
    broker_settings: BrokerSettings,
    contenders: Contenders,
    tmp_path: Path,
) -> None:
    mongo = MongoSettings(mongo_url=contenders.url, mongo_db=contenders.db_name)
    account = f"acc{uuid.uuid4().hex[:6]}"
    stories: dict[str, list[FaxMessage]] = {
        "sent": outbound_sent("x", account, T0),
        "failed": outbound_failed("x", account, T0),
    }
    rng = random.Random(1818)
    kinds = {f"fax_{i:02d}": ("sent", "failed")[i % 2] for i in range(FAXES)}
    events = [e for fax, kind in kinds.items() for e in renamed(stories[kind], fax)]
    events += rng.sample(events, len(events) // 3)  # redeliveries
    rng.shuffle(events)
    batches = [events[i :: KILLS + 1] for i in range(KILLS + 1)]

    store = await Store.connect(mongo)
    observer = HeldLease(store.db[LEASES], LEASE_NAME, "observer", TTL_S)
    bus = Bus(broker_settings)
    writers = Writers(broker_settings, mongo, tmp_path)
    try:
        await bus.connect()
        # The first writer alone makes the reference documents.
        writers.spawn()
        await writers.ready()
        await wait_for(lambda: _true(consumers(rabbit, broker_settings) == 1), 30)
        expected: dict[str, object] = {}
        for name, story in stories.items():
            for event in renamed(story, f"ref_{name}"):
                await bus.publish(event)
            expected[name] = await written_whole(store, account, f"ref_{name}", len(story))
        for _ in range(CONTENDERS - 1):
            writers.spawn()
        await writers.ready()

        killed: list[str] = []
        for batch in batches[:-1]:
            await asyncio.gather(*(bus.publish(e) for e in batch))
            holder = await observer.current_holder()
            assert holder is not None
            writers.by_pid(pid_of(holder)).send_signal(signal.SIGKILL)
            killed.append(holder)

            async def taken_over(dead: str = holder) -> bool:
                now = await observer.current_holder()
                return now is not None and now != dead

            await wait_for(taken_over, 3 * TTL_S + 10)
        await asyncio.gather(*(bus.publish(e) for e in batches[-1]))

        async def all_written() -> bool:
            for fax, kind in kinds.items():
                doc = await fetch(store, account, "202611", fax)
                if doc is None or normal(doc) != expected[kind]:
                    return False
            return True

        await wait_for(all_written, 60)
        written = store.history.collection(account, "202611")
        assert await written.count_documents({"_id": {"$in": list(kinds)}}) == FAXES
        # The broker's figures lag a little behind the consumers themselves.
        await wait_for(lambda: _true(consumers(rabbit, broker_settings) == 1), 15)
        # One generation per holder, none shared: the first writer's, then one per kill.
        latest = await observer.lease.current()
        assert latest is not None
        assert latest["generation"] == KILLS + 1, latest
        assert latest["holder"] not in killed
        assert sum(p.poll() is None for p in writers.procs) == CONTENDERS - KILLS
    finally:
        writers.stop_all()
        await bus.close()
        await store.close()


async def _true(value: bool) -> bool:
    return value
