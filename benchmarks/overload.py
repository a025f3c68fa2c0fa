"""Three times the calls one transmitter sustains: every fax delivered, none failed, no stall.

``benchmarks/concurrent_calls.py`` finds the largest number of concurrent real-time
calls (pace 1, one A4 page each) one transmitter process carries with zero failures,
per media (G.711, T.38); this takes those figures from its results file
(``benchmarks/results/transmitter.json``) or from ``--g711`` / ``--t38``. Per media,
one fresh transmitter (CPU 0, as many calls allowed as offered: admission control, not
``transmitter_max_calls``, is what must hold; its bound of calls at once,
``FAXBOX_TRANSMITTER_ADMIT_CALLS``, is the capacity unless ``--no-admit-calls``) and
pstn-sim (CPU 1) then get, in one run:

1. the **anchor**: N requests (the capacity), ``--stagger-ms`` apart; faxes a minute;
2. the **overload**: 3 N requests (``--factor``), the same way.

Every request allows one attempt only, so a failed call is a failed fax. A step passes
when every fax ends in ``FaxSent`` with all its pages (``delivered``), none in
``FaxFailed`` (``failed``), none unfinished by the deadline (``unfinished``: a stall),
and the transmitter still answers /healthz; after the run it gets SIGTERM and must exit
within its grace period plus margin (``exit_s``). ``max_loop_lag_ms`` is the
transmitter's ``faxbox_event_loop_lag_max_ms`` over the run, ``deferred`` its
``faxbox_transmitter_overload_deferred_total`` (requests put back, unclaimed, while its
loop ran late or it had its bound of calls). ``ratio_vs_anchor``: faxes a minute under
overload over faxes a minute at capacity (1.0: overload costs no throughput; below 1:
the cost of waiting).

    . var/env; flock /tmp/faxbox-e2e.lock uv run python benchmarks/overload.py \\
        [--g711 N] [--t38 N] [--factor 3] [--runs 1] [--media g711,t38]

Writes benchmarks/results/overload.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.concurrent_calls import (  # noqa: E402
    MONGO_URL,
    NUMBER,
    Events,
    a4_page,
    cpu_seconds,
    spawn,
    step,
    stop,
    use_carrier,
)
from faxbox.shared.bus import Bus  # noqa: E402
from faxbox.shared.contracts import (  # noqa: E402
    FaxSettings,
    OutboundFaxRequested,
    RetryPolicy,
    month_of,
)
from faxbox.shared.settings import BrokerSettings, MongoSettings  # noqa: E402
from faxbox.shared.store import Account, Carrier, Faxbox, Store, User  # noqa: E402
from tests import children  # noqa: E402
from tests.support import RabbitServer, free_port  # noqa: E402

RESULT = REPO / "benchmarks" / "results" / "overload.json"
CAPACITY = REPO / "benchmarks" / "results" / "transmitter.json"
GRACE_S, MARGIN_S = 20.0, 10.0


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def healthy(port: int, path: str = "/healthz") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def one_media(
    bus: Bus,
    events: Events,
    template: OutboundFaxRequested,
    media: str,
    capacity: int,
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    far_end: tuple[int, int],
) -> dict[str, Any]:
    """``far_end``: pstn-sim's pid and metrics port."""
    sim_pid, sim_metrics = far_end
    http_port = free_port()
    transmitter = spawn(
        [sys.executable, "-m", "faxbox.transmitter"],
        {
            **env,
            "FAXBOX_HTTP_PORT": str(http_port),
            "FAXBOX_TRANSMITTER_LINE_PACE": "1",
            "FAXBOX_TRANSMITTER_MAX_CALLS": "5000",
            **({"FAXBOX_TRANSMITTER_ADMIT_CALLS": str(capacity)} if args.admit_calls else {}),
            "FAXBOX_TRANSMITTER_PREFETCH": "1000",
            "FAXBOX_TRANSMITTER_REQUEST_T38": "true" if media == "t38" else "false",
            "FAXBOX_TRANSMITTER_SHUTDOWN_GRACE_S": str(GRACE_S),
            "FAXBOX_SHUTDOWN_MARGIN_S": str(MARGIN_S),
            "FAXBOX_LOG_LEVEL": args.log_level,
        },
        0,
        logs / f"transmitter-{media}.log",
    )
    stagger_s = args.stagger_ms / 1000
    result: dict[str, Any] = {"capacity": capacity}
    try:
        # Ready, not only alive: its queue must be bound before the first request.
        for _ in range(600):
            if await asyncio.to_thread(healthy, http_port, "/readyz"):
                break
            await asyncio.sleep(0.1)
        for name, n in (("anchor", capacity), ("overload", capacity * args.factor)):
            sim_cpu = cpu_seconds(sim_pid)
            outcome = await step(
                bus,
                events,
                template,
                n,
                stagger_s,
                transmitter.pid,
                timeout_s=args.step_timeout_s + n * stagger_s,
            )
            outcome["faxes_per_min"] = round(outcome["sent_ok"] / outcome["elapsed_s"] * 60, 1)
            outcome["pstn_sim_core_share"] = round(
                (cpu_seconds(sim_pid) - sim_cpu) / outcome["elapsed_s"], 3
            )
            outcome["answers_healthz"] = await asyncio.to_thread(healthy, http_port)
            print(media, name, json.dumps(outcome), flush=True)
            result[name] = outcome
        result["max_loop_lag_ms"] = round(
            await asyncio.to_thread(metric, http_port, "faxbox_event_loop_lag_max_ms"), 1
        )
        # The far end's figure is its process's maximum so far (it serves every media).
        result["pstn_sim_max_loop_lag_ms"] = round(
            await asyncio.to_thread(metric, sim_metrics, "faxbox_event_loop_lag_max_ms"), 1
        )
        result["deferred"] = int(
            await asyncio.to_thread(metric, http_port, "faxbox_transmitter_overload_deferred_total")
        )
    finally:
        started = time.monotonic()
        transmitter.send_signal(signal.SIGTERM)
        code: int | None = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = await asyncio.to_thread(transmitter.wait, GRACE_S + MARGIN_S + 30)
        result["exit_s"] = round(time.monotonic() - started, 2)
        result["exit_code"] = code
        stop(transmitter)
    return result


async def one_run(args: argparse.Namespace, capacities: dict[str, int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="faxbox-overload-"))
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    database = f"bench_{uuid.uuid4().hex[:8]}"
    rabbit = RabbitServer.from_env()
    vhost = rabbit.add_scratch_vhost("bench")
    amqp_url = rabbit.url_for_vhost(vhost)
    broker = BrokerSettings(amqp_url=amqp_url, exchange_prefix=prefix, prefetch=500)
    store = await Store.connect(MongoSettings(mongo_url=MONGO_URL, mongo_db=database))
    await store.ensure_indexes()
    sip_port, sim_http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    sim_metrics = free_port(socket.SOCK_STREAM)
    sim = spawn(
        [sys.executable, "-m", "faxbox.pstn_sim"],
        {
            "FAXBOX_PSTN_SIM_SIP_PORT": str(sip_port),
            "FAXBOX_PSTN_SIM_HTTP_PORT": str(sim_http),
            "FAXBOX_HTTP_PORT": str(sim_metrics),
            "FAXBOX_PSTN_SIM_PACE": "1",
            "FAXBOX_PSTN_SIM_DATA_DIR": str(tmp / "sim"),
            "FAXBOX_LOG_LEVEL": args.log_level,
        },
        1,
        tmp / "pstn-sim.log",
    )
    bus = Bus(broker)
    results: dict[str, Any] = {"logs": str(tmp)}
    try:
        for _ in range(100):
            if await asyncio.to_thread(healthy, sim_http):
                break
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
        await use_carrier(store, Carrier(name="sim", sip_host="127.0.0.1", sip_port=sip_port))
        env = {
            "FAXBOX_AMQP_URL": amqp_url,
            "FAXBOX_EXCHANGE_PREFIX": prefix,
            "FAXBOX_MONGO_URL": MONGO_URL,
            "FAXBOX_MONGO_DB": database,
        }
        for media, capacity in capacities.items():
            results[media] = await one_media(
                bus, events, template, media, capacity, args, env, tmp, (sim.pid, sim_metrics)
            )
    finally:
        await bus.close()
        stop(sim)
        rabbit.delete_vhost(vhost)
        await store.client.drop_database(database)
        await store.close()
    return results


def summary(media: str, runs: list[dict[str, Any]], factor: int) -> dict[str, Any]:
    mine = [r[media] for r in runs]
    overload = [r["overload"] for r in mine if "overload" in r]

    def total(key: str) -> int:
        return sum(int(o[key]) for o in overload)

    anchor_rates = [r["anchor"]["faxes_per_min"] for r in mine if "anchor" in r]
    overload_rates = [o["faxes_per_min"] for o in overload]
    anchor = statistics.median(anchor_rates) if anchor_rates else None
    rate = statistics.median(overload_rates) if overload_rates else None
    return {
        "capacity": mine[0]["capacity"],
        "offered": total("calls"),
        "delivered": total("sent_ok"),
        "failed": total("failed"),
        "unfinished": total("unfinished"),
        "failure_texts": sorted({t for o in overload for t in o["failure_texts"]}),
        "max_loop_lag_ms": max(r.get("max_loop_lag_ms", 0.0) for r in mine),
        "pstn_sim_max_loop_lag_ms": max(r.get("pstn_sim_max_loop_lag_ms", 0.0) for r in mine),
        "transmitter_core_share": [o["transmitter_core_share"] for o in overload],
        "pstn_sim_core_share": [o["pstn_sim_core_share"] for o in overload],
        "deferred": sum(r.get("deferred", 0) for r in mine),
        "anchor_failed": sum(r["anchor"]["failed"] for r in mine if "anchor" in r),
        "anchor_faxes_per_min": anchor,
        "overload_faxes_per_min": rate,
        "ratio_vs_anchor": round(rate / anchor, 3) if rate and anchor else None,
        "answers_healthz": all(o["answers_healthz"] for o in overload),
        "exit_s_max": max(r["exit_s"] for r in mine),
        "exit_within_grace": all(r["exit_s"] <= GRACE_S + MARGIN_S for r in mine),
        "factor": factor,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g711", type=int, help="G.711 capacity (default: transmitter.json)")
    parser.add_argument("--t38", type=int, help="T.38 capacity (default: transmitter.json)")
    parser.add_argument("--media", default="g711,t38")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--stagger-ms", type=float, default=50.0)
    parser.add_argument("--step-timeout-s", type=float, default=900.0)
    parser.add_argument("--log-level", default="WARNING", help="of both processes (logs: tmp)")
    parser.add_argument(
        "--no-admit-calls",
        dest="admit_calls",
        action="store_false",
        help="no bound of calls at once (FAXBOX_TRANSMITTER_ADMIT_CALLS, default: the capacity)",
    )
    args = parser.parse_args()
    known = json.loads(CAPACITY.read_text()) if CAPACITY.exists() else {}
    capacities = {
        "g711": args.g711 or int(known.get("g711_concurrent_calls", 0)),
        "t38": args.t38 or int(known.get("t38_concurrent_calls", 0)),
    }
    capacities = {m: n for m, n in capacities.items() if n and m in args.media.split(",")}
    if not capacities:
        raise SystemExit("no capacity: run benchmarks/concurrent_calls.py or pass --g711/--t38")
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    runs = []
    for n in range(args.runs):
        result = await one_run(args, capacities)
        print(f"run {n + 1}: {json.dumps(result)}", flush=True)
        runs.append(result)
    by_media = {media: summary(media, runs, args.factor) for media in capacities}
    report = {
        "benchmark": "overload",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "target": "failed == 0, unfinished == 0, exit within grace + margin, at factor 3",
        "anchor": "anchor_faxes_per_min: the same transmitter offered its capacity in the "
        "same run; ratio_vs_anchor = overload_faxes_per_min / anchor_faxes_per_min",
        "offered": sum(m["offered"] for m in by_media.values()),
        "delivered": sum(m["delivered"] for m in by_media.values()),
        "failed": sum(m["failed"] for m in by_media.values()),
        "unfinished": sum(m["unfinished"] for m in by_media.values()),
        "max_loop_lag_ms": max(m["max_loop_lag_ms"] for m in by_media.values()),
        **by_media,
        "capacity_source": "arguments" if args.g711 or args.t38 else str(CAPACITY.name),
        "runs": args.runs,
        "stagger_ms": args.stagger_ms,
        "admit_calls": "capacity" if args.admit_calls else None,
        "shutdown": {"grace_s": GRACE_S, "margin_s": MARGIN_S},
        # The machine is shared: what else ran shows in the load average.
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "details": runs,
    }
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        children.end_all()
