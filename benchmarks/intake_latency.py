"""Intake latency with IMAP IDLE: APPEND → MailReceived confirmed and consumed.

Against the real local servers (``deploy/local/up``, then ``. var/env``): Dovecot,
RabbitMQ, FerretDB. A mail-poller process (``python -m faxbox.mail_poller``, IDLE mode,
as in production) watches a fresh folder of its own; this script APPENDs a mail over an
already logged-in IMAP connection and stops the clock when the ``MailReceived`` is
consumed from the validator's queue (so the time covers: the poller being woken, it
fetching the mail, storing it in GridFS, recording the decision, the confirmed publish,
and the broker delivering it to a consumer). The next mail is appended once the previous
one was moved out of the folder.

Two configurations, alternating run by run, each run with a fresh poller process:
- ``push`` (what ``deploy/local/run`` runs): the poller idles, and has registered a
  push URL on its folder (``FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST``); Dovecot's
  ``deploy/dovecot/faxbox-push.lua`` POSTs to it when the APPEND commits.
  ``p50_s``/``p99_s`` are this configuration's.
- ``idle_only``: no push URL; the poller is woken by IDLE's EXISTS alone.

Anchor, in the same runs: a second IDLE connection on the same folder records when
Dovecot pushes EXISTS for each mail. An idling imap process of Dovecot 2.3 (and 2.4)
sends EXISTS 0.5 s after it first sees the folder change (``NOTIFY_DELAY_MSECS`` in
``mailbox-watch.c``, not configurable; IMAP NOTIFY waits the same), so no IDLE-only
client of this server gets below it; ``idle_only.poller_share_*`` is what remains after
that push.

The poller's part is split with its own timestamps (wall clock, same machine), from the
APPEND: -> ledger ``created_at`` (woken, IDLE DONE, SEARCH, ledger lookup, UID FETCH),
-> the outbox decision's ``decided_at`` (decision lookup, GridFS store), -> consumed
(recording the decision, the publish until the broker's confirm, the broker delivering
to the validator queue's consumer).

p50/p99 are over all samples of a configuration; the per-run medians are reported too.
Writes benchmarks/results/intake_latency.json.

    uv run python benchmarks/intake_latency.py [--runs 3] [--samples 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import aioimaplib
from aioimaplib.aioimaplib import quoted
from pymongo import AsyncMongoClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faxbox.shared.bus import Bus  # noqa: E402
from faxbox.shared.contracts import MailReceived  # noqa: E402
from faxbox.shared.settings import BrokerSettings  # noqa: E402
from tests import children  # noqa: E402
from tests.support import RabbitServer  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "intake_latency.json"


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


MONGO_URL = env("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
IMAP_HOST = env("FAXBOX_IMAP_HOST", "127.0.0.1")
IMAP_PORT = int(env("FAXBOX_IMAP_PORT", "1143"))
IMAP_PASSWORD = env("FAXBOX_IMAP_TEST_PASSWORD", "faxbox-test")
_USERS = env("FAXBOX_IMAP_TEST_USERS", "bob@faxbox.test").split(",")
IMAP_USER = "bob@faxbox.test" if "bob@faxbox.test" in _USERS else _USERS[-1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))  # nearest rank
    return ordered[rank - 1]


async def imap_login() -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4(IMAP_HOST, IMAP_PORT, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(IMAP_USER, IMAP_PASSWORD)
    assert response.result == "OK", response
    return client


class Observer:
    """A plain IDLE client on the folder: when does Dovecot push EXISTS?"""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.pushes: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = await imap_login()
        await self.client.select(quoted(self.folder))
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            idle = await self.client.idle_start(timeout=600)
            lines = await self.client.wait_server_push()
            stamp = time.perf_counter()
            if any(isinstance(x, bytes) and x.endswith(b"EXISTS") for x in lines):
                self.pushes.append(stamp)
            self.client.idle_done()
            await asyncio.wait_for(idle, 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.logout(), 5)

    async def push_after(self, t0: float, timeout_s: float = 10) -> float | None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            later = [p for p in self.pushes if p >= t0]
            if later:
                return later[0] - t0
            await asyncio.sleep(0.005)
        return None


async def one_run(run: int, samples: int, warmup: int, push: bool) -> dict[str, Any]:
    rabbit = RabbitServer.from_env()
    vhost = rabbit.add_scratch_vhost("bench")
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    broker = BrokerSettings(amqp_url=rabbit.url_for_vhost(vhost), exchange_prefix="bench")
    bus = Bus(broker)
    arrivals: dict[str, float] = {}

    async def on_mail(message: MailReceived) -> None:
        arrivals[message.rfc822_message_id or ""] = time.perf_counter()

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    ledger = mongo[db_name]["intake_ledger"]
    decisions = mongo[db_name]["mail_poller_decisions"]
    appender = await imap_login()
    assert (await appender.create(quoted(folder))).result == "OK"
    observer = Observer(folder)
    poller: asyncio.subprocess.Process | None = None
    latencies: list[float] = []
    idle_pushes: list[float | None] = []
    stages: list[dict[str, float]] = []
    try:
        await bus.connect()
        consumer = bus.consumer("validator", {MailReceived: on_mail})
        await consumer.start()
        mailbox = {
            "name": f"bench/{folder}",
            "host": IMAP_HOST,
            "port": IMAP_PORT,
            "security": "none",
            "username": IMAP_USER,
            "password": IMAP_PASSWORD,
            "folder": folder,
            "processed_folder": f"{folder}-processed",
            "oversize_folder": f"{folder}-oversize",
            "failed_folder": f"{folder}-failed",
        }
        poller = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "faxbox.mail_poller",
            env={
                **os.environ,
                "FAXBOX_AMQP_URL": broker.amqp_url,
                "FAXBOX_EXCHANGE_PREFIX": broker.exchange_prefix,
                "FAXBOX_MONGO_URL": MONGO_URL,
                "FAXBOX_MONGO_DB": db_name,
                "FAXBOX_MAIL_POLLER_MAILBOXES": json.dumps([mailbox]),
                "FAXBOX_LOG_LEVEL": "WARNING",
                "FAXBOX_HTTP_PORT": "0",
                "FAXBOX_MAIL_POLLER_IMAP_PUSH_HOST": "127.0.0.1" if push else "",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            **children.popen_options(),
        )
        children.track(poller.pid)
        await observer.start()
        for index in range(warmup + samples):
            token = uuid.uuid4().hex
            message_id = f"<{token}@bench.example>"
            raw = (
                f"From: alice@example.com\r\nTo: +12125551234@fax.example.com\r\n"
                f"Subject: bench {index}\r\nMessage-ID: {message_id}\r\n\r\nfax me\r\n"
            ).encode()
            # Dovecot starts its 0.5 s notification timer at the first change it sees in
            # the folder's directory; a pause lets the timers of the previous mail lapse,
            # so each sample starts from a quiet folder, as a real intake mailbox is.
            await asyncio.sleep(1.0)
            wall0, t0 = time.time(), time.perf_counter()
            response = await appender.append(raw, mailbox=quoted(folder))
            assert response.result == "OK", response
            deadline = t0 + (60 if index == 0 else 20)
            while message_id not in arrivals:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no MailReceived for sample {index}")
                await asyncio.sleep(0.002)
            latency = arrivals[message_id] - t0
            # EXISTS comes 0.5 s after the APPEND or, when the mail was moved out first, never.
            idle_push = await observer.push_after(t0, timeout_s=1.5)
            # Moved? Asked of the ledger, not over IMAP, to leave the folder quiet.
            while not (
                entry := await ledger.find_one(
                    {"rfc822_message_id": message_id, "moved_at": {"$ne": None}}
                )
            ):
                await asyncio.sleep(0.02)
            decision = await decisions.find_one({"_id": entry["message_key"]})
            assert decision is not None
            if index >= warmup:
                latencies.append(latency)
                idle_pushes.append(idle_push)
                fetched = entry["created_at"].replace(tzinfo=UTC).timestamp() - wall0
                decided = decision["decided_at"].replace(tzinfo=UTC).timestamp() - wall0
                stages.append(
                    {
                        "fetched": fetched,
                        "store_decide": decided - fetched,
                        "publish_deliver": latency - decided,
                    }
                )
        await consumer.stop(5)
    finally:
        if poller is not None:
            poller.terminate()
            await asyncio.wait_for(poller.wait(), 30)
        await observer.stop()
        await bus.close()
        for name in (folder, *(f"{folder}-{end}" for end in ("processed", "oversize", "failed"))):
            await appender.delete(quoted(name))
        await appender.logout()
        await mongo.drop_database(db_name)
        await mongo.close()
        rabbit.delete_vhost(vhost)
    seen = [x for x in idle_pushes if x is not None]
    print(
        f"run {run} ({'push' if push else 'idle_only'}): p50 {statistics.median(latencies):.3f} s, "
        f"max {max(latencies):.3f} s, Dovecot IDLE EXISTS p50 "
        f"{statistics.median(seen) if seen else float('nan'):.3f} s",
        flush=True,
    )
    return {"latencies": latencies, "idle_pushes": idle_pushes, "stages": stages}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for run in runs for x in run["latencies"]]
    stages = [x for run in runs for x in run["stages"]]
    shares = [
        lat - push
        for run in runs
        for lat, push in zip(run["latencies"], run["idle_pushes"], strict=True)
        if push is not None
    ]
    return {
        "samples": len(latencies),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(percentile(latencies, 0.99), 4),
        "max_s": round(max(latencies), 4),
        "run_p50s_s": [round(statistics.median(r["latencies"]), 4) for r in runs],
        "after_idle_exists_p50_s": round(statistics.median(shares), 4) if shares else None,
        "breakdown_p50_s": {
            name: round(statistics.median(s[name] for s in stages), 4)
            for name in ("fetched", "store_decide", "publish_deliver")
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20, help="per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--note",
        default=f"Dovecot at {IMAP_HOST}:{IMAP_PORT}, configured by deploy/local/dovecot.sh",
        help="what was measured (server, configuration, findings), for the result file",
    )
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()

    push_runs: list[dict[str, Any]] = []
    idle_runs: list[dict[str, Any]] = []
    for r in range(args.runs):
        push_runs.append(await one_run(2 * r + 1, args.samples, args.warmup, push=True))
        idle_runs.append(await one_run(2 * r + 2, args.samples, args.warmup, push=False))
    pushed, idle_only = summary(push_runs), summary(idle_runs)
    exists = [x for run in push_runs + idle_runs for x in run["idle_pushes"] if x is not None]
    result = {
        "benchmark": "intake_latency",
        "what": "APPEND to Dovecot -> MailReceived confirmed and consumed from the "
        "validator queue; mail-poller process idling on the folder, woken by Dovecot's "
        "push (deploy/dovecot/faxbox-push.lua), as deploy/local/run runs it",
        "runs": args.runs,
        "samples": pushed["samples"],
        "p50_s": pushed["p50_s"],
        "p99_s": pushed["p99_s"],
        "max_s": pushed["max_s"],
        "run_p50s_s": pushed["run_p50s_s"],
        "breakdown_p50_s": pushed["breakdown_p50_s"],
        "idle_only": {k: v for k, v in idle_only.items()},
        "anchor": "Dovecot's own IDLE EXISTS (APPEND -> EXISTS on a second idling "
        "connection), same mails, same runs",
        "idle_exists_p50_s": round(statistics.median(exists), 4),
        "idle_exists_p99_s": round(percentile(exists, 0.99), 4),
        "breakdown_note": "from the APPEND: fetched = ledger created_at (woken, DONE, "
        "SEARCH, ledger lookup, UID FETCH); store_decide: -> the outbox decision's "
        "decided_at (decision lookup, GridFS); publish_deliver: -> consumed (decision "
        "recorded, confirmed publish, delivery). Stamps are millisecond wall-clock "
        "times, so stages are +-1 ms. idle_only.after_idle_exists_p50_s is the "
        "poller's share after Dovecot's EXISTS.",
        "note": args.note,
        "targets": {"p50_s": 0.5, "p99_s": 2.0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
