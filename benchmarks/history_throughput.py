"""History writes sustained through the real broker into the local FerretDB.

A history-writer runs as its own process (``python -m faxbox.history``, default batching
settings) on a fresh vhost and a fresh database. This process
publishes N fax events (stories of 5 events per fax: requested, two failed attempts,
sent, the sent mail; all stories interleaved in a shuffled order, encoded before the
clock starts, published 100 at a time with confirms) and polls the writer's /metrics
until every event is acked, i.e. written (the writer acks only after its bulk write).
events/s = N / (time of the last ack - time of the first publish). Median of several
runs.

    uv run python benchmarks/history_throughput.py [--events 10000] [--runs 3]

``BENCH_FAXBOX_<SETTING>=<value>`` sets ``FAXBOX_<SETTING>`` for the writer alone (e.g.
``BENCH_FAXBOX_HISTORY_WRITE_LANES=1`` to compare with one lane).

Anchor, in the same run: the same events' update documents sent straight to the
database, one per event, no broker (``anchor_raw_upserts_per_s``); ``ratio_vs_anchor``
> 1 means the writer's merging of a fax's events in a batch outweighs the broker.

Writes benchmarks/results/history.json (field ``events_per_s``; target >= 2000).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import signal
import statistics
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import infra_cpu_s, process_cpu_s
from faxbox.shared.bus import Bus, encode
from faxbox.shared.contracts import (
    DocumentRef,
    FailureClass,
    FaxAttemptFailed,
    FaxFailure,
    FaxMessage,
    FaxSent,
    FaxSettings,
    NotificationKind,
    NotificationSent,
    OutboundFaxRequested,
    TransferStatistics,
)
from faxbox.shared.routing import Topology, routing_key
from faxbox.shared.settings import BrokerSettings
from tests import children
from tests.support import RabbitServer, free_port

RESULTS = Path(__file__).parent / "results" / "history.json"
TARGET = 2000
ACCOUNTS = 5
PUBLISH_WINDOW = 100


def _ref(account: str, month: str, name: str) -> DocumentRef:
    return DocumentRef(
        account_id=account,
        month=month,
        file_id=f"doc_{uuid.uuid4().hex}",
        filename=name,
        content_type="application/pdf",
        length=12345,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
    )


def story(n: int, t0: datetime) -> list[FaxMessage]:
    account = f"bench{n % ACCOUNTS}"
    month = t0.strftime("%Y%m")
    common: dict[str, Any] = {"fax_id": f"fax_{n:07d}", "account_id": account, "month": month}
    failure = FaxFailure(failure_class=FailureClass.line, code=2, text="no answer")
    dest = "+14155550123"
    return [
        OutboundFaxRequested(
            **common,
            occurred_at=t0,
            user_id="usr_1",
            faxbox_id="fbx_1",
            sender_email="alice@example.com",
            destination=dest,
            settings=FaxSettings(),
            original=_ref(account, month, "original.pdf"),
            fax_tiff=_ref(account, month, "fax.tif"),
            pages=3,
            source_message_id="<m@example.com>",
        ),
        *(
            FaxAttemptFailed(
                **common,
                occurred_at=t0 + timedelta(minutes=attempt),
                destination=dest,
                attempt=attempt,
                attempts_allowed=3,
                failure=failure,
                pages_sent=0,
                next_attempt_at=t0 + timedelta(minutes=attempt + 2),
            )
            for attempt in (1, 2)
        ),
        FaxSent(
            **common,
            occurred_at=t0 + timedelta(minutes=6),
            user_id="usr_1",
            faxbox_id="fbx_1",
            destination=dest,
            attempts=3,
            carrier_id="car_1",
            statistics=TransferStatistics(
                pages_transferred=3,
                pages_total=3,
                bit_rate=14400,
                ecm=True,
                x_resolution=8031,
                y_resolution=7700,
                remote_station_id="REMOTE",
                duration_s=61.0,
            ),
            transmitted_tiff=_ref(account, month, "sent.tif"),
        ),
        NotificationSent(
            **common,
            occurred_at=t0 + timedelta(minutes=7),
            kind=NotificationKind.sent,
            recipients=("alice@example.com",),
            smtp_message_id=f"<{uuid.uuid4().hex}@faxbox>",
        ),
    ]


def acked(port: int, queue: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(
        r'^faxbox_messages_consumed_total\{(?=[^}]*queue="' + re.escape(queue) + r'")'
        r'(?=[^}]*outcome="acked")[^}]*\} ([0-9.e+]+)$',
        re.M,
    )
    return int(sum(float(v) for v in pattern.findall(text)))


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def one_run(events_wanted: int, rabbit: RabbitServer, mongo_url: str) -> dict[str, Any]:
    vhost = rabbit.add_scratch_vhost("bench")
    amqp_url = rabbit.url_for_vhost(vhost)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    database = f"bench_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = (
        os.environ
        | {
            "FAXBOX_AMQP_URL": amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": prefix,
            "FAXBOX_MONGO_URL": mongo_url,
            "FAXBOX_MONGO_DB": database,
            "FAXBOX_HTTP_PORT": str(port),
            "FAXBOX_LOG_LEVEL": "WARNING",
            "FAXBOX_HISTORY_RETENTION_INTERVAL_S": "0",
        }
        | writer_overrides()
    )
    bus = Bus(BrokerSettings(amqp_url=amqp_url, exchange_prefix=prefix))
    connection: aio_pika.abc.AbstractConnection | None = None
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faxbox.history", env=env, **children.popen_options()
    )
    children.track(writer.pid)
    try:
        deadline = time.monotonic() + 60
        while not ready(port):
            if time.monotonic() > deadline or writer.returncode is not None:
                raise RuntimeError("the history-writer did not become ready")
            await asyncio.sleep(0.1)
        await bus.connect()
        t0 = datetime(2026, 11, 10, tzinfo=UTC)
        events = [e for n in range(events_wanted // 5) for e in story(n, t0)]
        random.Random(events_wanted).shuffle(events)

        # Encoded before the clock starts, as the services that publish them would have:
        # the harness shares the writer's two cores, so its own serialising would be
        # measured as the writer's slowness.
        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(prefix).events_exchange, ensure=False)
        encoded = [(encode(e), routing_key(type(e))) for e in events]
        cpu_before = _cpu_now(writer.pid)
        started = time.perf_counter()
        for i in range(0, len(encoded), PUBLISH_WINDOW):
            await asyncio.gather(
                *(
                    exchange.publish(message, routing_key=key, mandatory=True)
                    for message, key in encoded[i : i + PUBLISH_WINDOW]
                )
            )
        published = time.perf_counter()
        queue = Topology(prefix).queue("history")
        while (done := acked(port, queue)) < len(events):
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {done} of {len(events)} events written")
            # Each poll makes the writer render all its metrics (py-spy: 15 % of its CPU
            # at 50 polls a second); 10 a second costs little and resolves 0.1 s in ~10 s.
            await asyncio.sleep(0.1)
        finished = time.perf_counter()
        cpu_after = _cpu_now(writer.pid)
    finally:
        if connection is not None:
            await connection.close()
        await bus.close()
        writer.send_signal(signal.SIGTERM)
        await asyncio.wait_for(writer.wait(), timeout=60)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        docs = 0
        for name in await client[database].list_collection_names():
            if name.startswith("fax_history_"):
                docs += await client[database][name].count_documents({"state.status": "sent"})
        await client.drop_database(database)
        await client.close()
        rabbit.delete_vhost(vhost)
    if docs != len(events) // 5:
        raise RuntimeError(f"{docs} faxes recorded as sent, expected {len(events) // 5}")
    seconds = finished - started
    return {
        "events": len(events),
        "seconds": round(seconds, 3),
        "publish_seconds": round(published - started, 3),
        "events_per_s": round(len(events) / seconds, 1),
        "cpu_ms_per_event": {
            # (a server's process that ended meanwhile takes its seconds with it: >= 0)
            name: round(
                max(0.0, cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / len(events), 3
            )
            for name in cpu_after
        },
    }


def writer_overrides() -> dict[str, str]:
    """``BENCH_FAXBOX_X=v`` in this process's environment: ``FAXBOX_X=v`` for the writer only."""
    return {
        name.removeprefix("BENCH_"): value
        for name, value in os.environ.items()
        if name.startswith("BENCH_FAXBOX_")
    }


def _cpu_now(writer_pid: int) -> dict[str, float]:
    return infra_cpu_s() | {"writer": process_cpu_s(writer_pid), "harness": time.process_time()}


async def raw_upserts_per_s(mongo_url: str, updates: int) -> float:
    """Anchor: the same events' upserts, sent straight to the database by one client.

    The writer's own update documents, one per event (nothing merged), all into one
    collection, 20 per ``update`` command, one command at a time. The writer beats it
    when it merges events of one fax in a batch and spreads accounts over collections.
    """
    from faxbox.history.changes import change_for

    database = f"bench_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        t0 = datetime(2026, 11, 10, tzinfo=UTC)
        events = [e for n in range(updates // 5) for e in story(n, t0)]
        random.Random(updates).shuffle(events)
        changes = [change_for(e) for e in events]
        collection = client[database]["fax_history_anchor_202611"]
        # As the writer does: the collection and its index exist before the upserts.
        await collection.create_index([("created_at", -1), ("_id", -1)], name="created_at_id")
        started = time.perf_counter()
        for i in range(0, len(changes), 20):
            await client[database].command(
                {
                    "update": collection.name,
                    "updates": [
                        {"q": {"_id": c.fax_id}, "u": c.upsert, "upsert": True}
                        for c in changes[i : i + 20]
                    ],
                    "ordered": False,
                }
            )
        return len(changes) / (time.perf_counter() - started)
    finally:
        await client.drop_database(database)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rabbit = RabbitServer.from_env()
    mongo_url = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
    runs = []
    for n in range(args.runs):
        result = asyncio.run(one_run(args.events, rabbit, mongo_url))
        result["anchor_raw_upserts_per_s"] = round(
            asyncio.run(raw_upserts_per_s(mongo_url, args.events)), 1
        )
        print(f"run {n + 1}: {result}", flush=True)
        runs.append(result)
    median = statistics.median(r["events_per_s"] for r in runs)
    anchor = statistics.median(r["anchor_raw_upserts_per_s"] for r in runs)
    out = {
        "benchmark": "history",
        "description": (
            "Fax events published through the real RabbitMQ to a running history-writer "
            "process and written to the local FerretDB v1 (SQLite backend); events/s from "
            "the first publish to the last ack (acked only after the bulk write). Stories "
            "of 5 events per fax, interleaved in a shuffled order. Median of the runs."
        ),
        "target": f"events_per_s >= {TARGET}",
        "events_per_s": median,
        "meets_target": median >= TARGET,
        "anchor": (
            "raw_upserts_per_s: the same events' update documents sent straight to the "
            "database, one per event (unmerged), into one collection, 20 per command, "
            "one client, no broker"
        ),
        "anchor_raw_upserts_per_s": anchor,
        "ratio_vs_anchor": round(median / anchor, 3),
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"events_per_s": median, "anchor_raw_upserts_per_s": anchor}))


if __name__ == "__main__":
    main()
