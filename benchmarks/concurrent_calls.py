"""Concurrent real-time fax calls one transmitter process sustains with zero failed pages.

The whole service, not a bare engine loop: a transmitter process (``python -m
faxbox.transmitter``, pinned to CPU 0) consumes ``OutboundFaxRequested`` from RabbitMQ,
claims each job in FerretDB, takes a carrier channel, fetches and checks the TIFF and
places the call through pstn-sim (``python -m faxbox.pstn_sim``, pinned to CPU 1, the
"other core"), which receives on its ``receive`` number. Real time (pace 1), one A4 page
per fax, retry policy of a single attempt so any failure is final.

For each step N, N requests are published ``--stagger-ms`` apart (requests do not
arrive in the same 20 ms in real life; started in lock-step, every call reaches its
page end together, see benchmarks/pstn_sim_load.py), and the step passes when all N
end in ``FaxSent`` with every page accepted. The transmitter's CPU share of its core
over the step is recorded. ``g711_concurrent_calls`` / ``t38_concurrent_calls`` are
the largest N that passed in every run (median of runs per step for the CPU figures).
The issue's targets are G.711 ≥ 100 and T.38 ≥ 200.

``--via both`` (the default) runs the ladders twice: straight to pstn-sim, then through
Kamailio (Debian's, started by ``tests.peers.kamailio`` with a generated configuration:
every INVITE digest-authenticated, every dialog record-routed, UDP both sides) as the
carrier's proxy in front of pstn-sim; the media still flows end to end.
``kamailio_g711_concurrent_calls`` / ``kamailio_t38_concurrent_calls`` are that run's.

    . var/env; uv run python benchmarks/concurrent_calls.py [--runs 1] \\
        [--g711 50,100] [--t38 100,200] [--pace 1] [--via both|direct|kamailio]

Writes benchmarks/results/transmitter.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faxbox.shared.bus import Bus  # noqa: E402
from faxbox.shared.contracts import (  # noqa: E402
    FaxFailed,
    FaxSent,
    FaxSettings,
    Message,
    OutboundFaxRequested,
    RetryPolicy,
    month_of,
)
from faxbox.shared.settings import BrokerSettings, MongoSettings  # noqa: E402
from faxbox.shared.store import Account, Carrier, Faxbox, Store, User, new_id  # noqa: E402
from tests import children  # noqa: E402
from tests.peers.kamailio import running_kamailio  # noqa: E402
from tests.support import RabbitServer, free_port  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "transmitter.json"
MONGO_URL = os.environ.get("FAXBOX_MONGO_URL", "mongodb://127.0.0.1:27017/")
NUMBER = "+12125550100"  # pstn-sim's default row: a fax machine that receives


def a4_page(path: Path) -> Path:
    page = Image.new("1", (1728, 2292), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=36)
    for line in range(40):
        draw.text((100, 100 + 52 * line), f"Line {line}: the quick brown fox " * 2, font=font)
    page.save(path, compression="group4", dpi=(204, 196))
    return path


def _get(url: str) -> None:
    urllib.request.urlopen(url, timeout=2).close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(args: list[str], env: dict[str, str], cpu: int, log: Path) -> subprocess.Popen[bytes]:
    cpus = os.cpu_count() or 1
    return children.spawn(
        args,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec=(lambda: os.sched_setaffinity(0, {cpu})) if cpus > 1 else None,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    children.end(proc.pid, grace_s=20)
    proc.wait()


class Events:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.final: dict[str, Message] = {}

    async def start(self) -> None:
        await self.bus.declare_service("history")
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.get_queue(self.bus.topology.queue("history"))

        async def on_message(incoming: Any) -> None:
            from faxbox.shared.bus import decode

            message = decode(incoming)
            if isinstance(message, FaxSent | FaxFailed):
                self.final[message.fax_id] = message

        await queue.consume(on_message, no_ack=True)


async def step(
    bus: Bus,
    events: Events,
    template: OutboundFaxRequested,
    n: int,
    stagger_s: float,
    transmitter_pid: int,
    timeout_s: float,
) -> dict[str, Any]:
    ids: list[str] = []
    cpu_before = cpu_seconds(transmitter_pid)
    started = time.monotonic()
    for _ in range(n):
        request = template.model_copy(
            update={"fax_id": new_id("fax"), "message_id": uuid.uuid4().hex}
        )
        ids.append(request.fax_id)
        await bus.publish(request)
        await asyncio.sleep(stagger_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(i in events.final for i in ids):
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(transmitter_pid) - cpu_before
    sent = [events.final.get(i) for i in ids]
    ok = [
        m
        for m in sent
        if isinstance(m, FaxSent) and m.statistics.pages_transferred == m.statistics.pages_total
    ]
    failures = [m.failure.text for m in sent if isinstance(m, FaxFailed)]
    durations = [m.statistics.duration_s for m in ok]
    return {
        "calls": n,
        "sent_ok": len(ok),
        "failed": len(failures),
        "unfinished": sum(1 for m in sent if m is None),
        "failure_texts": sorted(set(failures))[:5],
        "elapsed_s": round(elapsed, 2),
        "median_call_s": round(statistics.median(durations), 2) if durations else None,
        "transmitter_cpu_s": round(cpu, 2),
        "transmitter_core_share": round(cpu / elapsed, 3),
    }


BENCH_PASSWORD = "bench-kamailio"


async def use_carrier(store: Store, carrier: Carrier) -> None:
    """Make ``carrier`` (with room for every call) the only one."""
    await store.carriers.delete_many({})
    await store.add_carrier(carrier.model_copy(update={"flags": ["fax"], "channel_cap": 2000}))


async def ladders_run(
    bus: Bus,
    events: Events,
    template: OutboundFaxRequested,
    ladders: dict[str, list[int]],
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
) -> dict[str, Any]:
    """Each mode's ladder through a fresh transmitter process; its results by mode."""
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for mode, ladder in ladders.items():
        transmitter = spawn(
            [sys.executable, "-m", "faxbox.transmitter"],
            {
                **env,
                "FAXBOX_TRANSMITTER_LINE_PACE": str(args.pace),
                "FAXBOX_TRANSMITTER_MAX_CALLS": "2000",
                "FAXBOX_TRANSMITTER_PREFETCH": "1000",
                "FAXBOX_TRANSMITTER_REQUEST_T38": "true" if mode == "t38" else "false",
                "FAXBOX_LOG_LEVEL": "WARNING",
            },
            0,
            logs / f"transmitter-{mode}.log",
        )
        await asyncio.sleep(3)
        steps = []
        try:
            for n in ladder:
                runs = []
                for _ in range(args.runs):
                    outcome = await step(
                        bus,
                        events,
                        template,
                        n,
                        args.stagger_ms / 1000,
                        transmitter.pid,
                        timeout_s=240 / args.pace + n * args.stagger_ms / 1000,
                    )
                    print(logs.name, mode, json.dumps(outcome), flush=True)
                    runs.append(outcome)
                steps.append(
                    {
                        "calls": n,
                        "passed_every_run": all(r["sent_ok"] == n for r in runs),
                        "median_core_share": statistics.median(
                            r["transmitter_core_share"] for r in runs
                        ),
                        "runs": runs,
                    }
                )
        finally:
            stop(transmitter)
        passed = [s["calls"] for s in steps if s["passed_every_run"]]
        results[mode] = {"max_passed": max(passed) if passed else 0, "steps": steps}
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--g711", default="50,100")
    parser.add_argument("--t38", default="100,200")
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--stagger-ms", type=float, default=50.0)
    parser.add_argument("--via", choices=["both", "direct", "kamailio"], default="both")
    args = parser.parse_args()
    ladders = {
        "g711": [int(x) for x in args.g711.split(",") if x],
        "t38": [int(x) for x in args.t38.split(",") if x],
    }
    load_at_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="faxbox-bench-"))
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    database = f"bench_{uuid.uuid4().hex[:8]}"
    rabbit = RabbitServer.from_env()
    vhost = rabbit.add_scratch_vhost("bench")
    amqp_url = rabbit.url_for_vhost(vhost)
    broker = BrokerSettings(amqp_url=amqp_url, exchange_prefix=prefix, prefetch=500)
    store = await Store.connect(MongoSettings(mongo_url=MONGO_URL, mongo_db=database))
    await store.ensure_indexes()
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    sim = spawn(
        [sys.executable, "-m", "faxbox.pstn_sim"],
        {
            "FAXBOX_PSTN_SIM_SIP_PORT": str(sip_port),
            "FAXBOX_PSTN_SIM_HTTP_PORT": str(http_port),
            "FAXBOX_PSTN_SIM_PACE": str(args.pace),
            "FAXBOX_PSTN_SIM_DATA_DIR": str(tmp / "sim"),
            "FAXBOX_LOG_LEVEL": "WARNING",
        },
        1,
        tmp / "pstn-sim.log",
    )
    bus = Bus(broker)
    results: dict[str, Any] = {}
    try:
        for _ in range(100):
            try:
                await asyncio.to_thread(_get, f"http://127.0.0.1:{http_port}/healthz")
                break
            except OSError:
                await asyncio.sleep(0.1)
        account = await store.create_account(Account(name="Bench", realm="bench.example"))
        user = await store.create_user(User(account_id=account.id, email="bench@bench.example"))
        faxbox = await store.create_faxbox(Faxbox(account_id=account.id, owner_user_id=user.id))
        month = month_of(datetime.now(UTC))
        page = a4_page(tmp / "page.tif")
        ref = await store.documents.put(
            account.id, month, page.read_bytes(), filename="page.tif", content_type="image/tiff"
        )
        template = OutboundFaxRequested(
            fax_id="template",
            account_id=account.id,
            month=month,
            user_id=user.id,
            faxbox_id=faxbox.id,
            sender_email="bench@bench.example",
            destination=NUMBER,
            settings=FaxSettings(caller_id="+12125550199", identity="BENCH"),
            retry_policy=RetryPolicy(attempts=1, delays_s=(1,)),
            original=ref,
            fax_tiff=ref,
            pages=1,
        )
        await bus.connect()
        events = Events(bus)
        await events.start()
        env = {
            "FAXBOX_AMQP_URL": amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": prefix,
            "FAXBOX_MONGO_URL": MONGO_URL,
            "FAXBOX_MONGO_DB": database,
        }
        if args.via in ("both", "direct"):
            await use_carrier(store, Carrier(name="sim", sip_host="127.0.0.1", sip_port=sip_port))
            results["direct"] = await ladders_run(bus, events, template, ladders, args, env, tmp)
        if args.via in ("both", "kamailio"):
            # Kamailio shares CPU 0 with the transmitter: pstn-sim keeps CPU 1 to itself.
            with running_kamailio(
                tmp / "kamailio",
                pstn=("127.0.0.1", sip_port),
                users={"bench": BENCH_PASSWORD},
                cpu=0 if (os.cpu_count() or 1) > 1 else None,
            ) as kamailio:
                await use_carrier(
                    store,
                    Carrier(
                        name="kamailio",
                        sip_host="127.0.0.1",
                        sip_port=kamailio.port,
                        sip_domain=kamailio.domain,
                        sip_username="bench",
                        sip_password=BENCH_PASSWORD,
                    ),
                )
                results["kamailio"] = await ladders_run(
                    bus, events, template, ladders, args, env, tmp / "via-kamailio"
                )
    finally:
        await bus.close()
        stop(sim)
        rabbit.delete_vhost(vhost)
        await store.client.drop_database(database)
        await store.close()
    previous = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    report = {
        "benchmark": "transmitter_concurrent_calls",
        "what": "N concurrent 1-page fax calls through one transmitter process (CPU 0) "
        "into pstn-sim (CPU 1), whole service incl. RabbitMQ and FerretDB; zero failed pages; "
        "kamailio_*: the same with Kamailio as the carrier's proxy (digest, record-route)",
        "pace": args.pace,
        "runs": args.runs,
        "stagger_ms": args.stagger_ms,
        "targets": {"g711": 100, "t38": 200},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # Real-time G.711 needs its cores: what else ran shows in the load average.
        "load_average_1m": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
    }
    # A run of one route keeps the other route's last figures.
    for key in ("g711_concurrent_calls", "t38_concurrent_calls", "details"):
        if key in previous:
            report[key] = previous[key]
    for key in ("kamailio_g711_concurrent_calls", "kamailio_t38_concurrent_calls", "kamailio"):
        if key in previous:
            report[key] = previous[key]
    if "direct" in results:
        report["g711_concurrent_calls"] = results["direct"]["g711"]["max_passed"]
        report["t38_concurrent_calls"] = results["direct"]["t38"]["max_passed"]
        report["details"] = results["direct"]
    if "kamailio" in results:
        report["kamailio_g711_concurrent_calls"] = results["kamailio"]["g711"]["max_passed"]
        report["kamailio_t38_concurrent_calls"] = results["kamailio"]["t38"]["max_passed"]
        report["kamailio"] = results["kamailio"]
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    figures = (
        "g711_concurrent_calls",
        "t38_concurrent_calls",
        "kamailio_g711_concurrent_calls",
        "kamailio_t38_concurrent_calls",
    )
    print(json.dumps({k: report.get(k) for k in figures}))


if __name__ == "__main__":
    asyncio.run(main())
