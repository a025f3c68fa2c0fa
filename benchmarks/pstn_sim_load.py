"""pstn-sim under load: many concurrent real-time fax calls into the simulator.

The simulator runs as its own process (``python -m faxbox.pstn_sim``) pinned to CPU 1;
this process, pinned to CPU 0, places N concurrent calls (pace 1, real time, one A4
page each, our ``UserAgent`` + spandsp sessions) to the simulator's ``receive`` number
and waits for them all. Measured per run: calls that succeeded on both ends, the
simulator's CPU time (from /proc) as a share of its core over the run, and its CPU per
second of call (line) time. Anchor, in the same run: the sending side's CPU for the same
calls (the same spandsp sessions and pump), as ``sim_cpu_vs_senders``.

Call starts are staggered (``--stagger-ms``, default 50: 100 calls start within 5 s).
Started in the same 20 ms, every call reaches its page end together: each receiver
spends about 4 ms closing the page (spandsp writing the TIFF) and each sender ~1.4 ms
opening one, so 100 of them stall the event loops (the simulator logged 0.2 s), which a
G.711 modem hears as a gap; in trials 0 to 38 % of such lock-step G.711 calls failed
(T30_ERR_TX_ECMPHD), staggered none did.

This is the budget the transmitter's concurrency benchmark (issue 5: G.711 ≥ 100,
T.38 ≥ 200 calls with pstn-sim on the other core) runs against.
Writes benchmarks/results/pstn_sim_load.json.

    uv run python benchmarks/pstn_sim_load.py [--runs 3] [--g711-calls 100] [--t38-calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faxbox.fax.line.pump import run_fax_over_call
from faxbox.fax.session import CallSettings, FaxEngine, FaxSession, T38Session
from faxbox.fax.sip.sdp import MediaKind
from faxbox.fax.sip.ua import UserAgent
from tests import children
from tests.support import free_port

RESULTS = Path(__file__).parent / "results" / "pstn_sim_load.json"
NUMBER = "+12125550100"  # the default table's "receive"


def _page(path: Path) -> Path:
    page = Image.new("1", (1728, 2292), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=36)
    for line in range(30):
        draw.text((120, 120 + 60 * line), f"pstn-sim load test line {line}", fill=0, font=font)
    page.save(path, compression="group4", dpi=(204, 196))
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def _wait_ready(url: str) -> None:
    for _ in range(100):
        try:
            await asyncio.to_thread(_http_json, url)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the simulator did not start")


async def one_run(
    calls: int, media: str, document: Path, data_dir: Path, stagger_s: float
) -> dict[str, Any]:
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    env = {
        **os.environ,
        "FAXBOX_PSTN_SIM_SIP_PORT": str(sip_port),
        "FAXBOX_PSTN_SIM_HTTP_PORT": str(http_port),
        "FAXBOX_PSTN_SIM_PACE": "1",
        "FAXBOX_PSTN_SIM_DATA_DIR": str(data_dir),
        "FAXBOX_HTTP_PORT": "0",
        "FAXBOX_LOG_LEVEL": "WARNING",
    }
    sim = await asyncio.create_subprocess_exec(
        "taskset",
        "-c",
        "1",
        sys.executable,
        "-m",
        "faxbox.pstn_sim",
        env=env,
        **children.popen_options(),
    )
    children.track(sim.pid)
    control = f"http://127.0.0.1:{http_port}"
    try:
        await _wait_ready(f"{control}/healthz")
        ua = await UserAgent.start(pace=1)

        def make(kind: MediaKind) -> FaxEngine:
            settings = CallSettings(file=document, local_identity="LOAD")
            if kind == "t38":
                return T38Session("send", settings)
            return FaxSession("send", settings)

        call_seconds: list[float] = []

        async def call(n: int) -> bool:
            await asyncio.sleep(n * stagger_s)
            started = time.monotonic()
            c = await ua.dial(f"sip:127.0.0.1:{sip_port}", "+12125550188", NUMBER)
            if media == "t38":
                await c.request_t38()
            outcome = await run_fax_over_call(c, make)
            call_seconds.append(time.monotonic() - started)
            return outcome.success

        cpu0, own0, t0 = _cpu_s(sim.pid), time.process_time(), time.monotonic()
        results = await asyncio.gather(*(call(n) for n in range(calls)))
        elapsed = time.monotonic() - t0
        sim_cpu, own_cpu = _cpu_s(sim.pid) - cpu0, time.process_time() - own0
        await ua.close()
        records = await asyncio.to_thread(_http_json, f"{control}/calls")
        received = sum(1 for r in records if (r.get("outcome") or {}).get("success"))
        return {
            "calls": calls,
            "sent_ok": sum(results),
            "received_ok": received,
            "elapsed_s": round(elapsed, 2),
            "sim_cpu_s": round(sim_cpu, 2),
            "mean_call_s": round(statistics.mean(call_seconds), 2),
            "sim_core_share": round(sim_cpu / elapsed, 3),
            "sim_cpu_ms_per_call_second": round(1000 * sim_cpu / sum(call_seconds), 3),
            # With every call up at once (the middle of the run): the core share needed.
            "sim_core_share_all_calls_up": round(calls * sim_cpu / sum(call_seconds), 3),
            "sender_cpu_s": round(own_cpu, 2),
            "sim_cpu_vs_senders": round(sim_cpu / own_cpu, 3) if own_cpu else None,
        }
    finally:
        sim.terminate()
        await asyncio.wait_for(sim.wait(), 10)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--g711-calls", type=int, default=100)
    parser.add_argument("--t38-calls", type=int, default=200)
    parser.add_argument("--stagger-ms", type=float, default=50.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    out: dict[str, Any] = {
        "benchmark": "pstn_sim_load",
        "what": "N concurrent real-time fax calls (1 A4 page, ECM) into pstn-sim pinned to "
        "CPU 1; senders in one process on CPU 0; call starts staggered by stagger_ms",
        "runs": args.runs,
        "stagger_ms": args.stagger_ms,
        "anchor": "the sending side's CPU for the same calls, same run (sim_cpu_vs_senders)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        document = _page(Path(tmp) / "page.tif")
        for media, calls in (("g711", args.g711_calls), ("t38", args.t38_calls)):
            runs = []
            for n in range(args.runs):
                run = await one_run(
                    calls, media, document, Path(tmp) / f"{media}-{n}", args.stagger_ms / 1000
                )
                print(media, json.dumps(run), flush=True)
                runs.append(run)
            out[media] = {
                "calls": calls,
                "runs": runs,
                "all_ok": all(r["sent_ok"] == r["received_ok"] == calls for r in runs),
                "median_sim_core_share_all_calls_up": statistics.median(
                    r["sim_core_share_all_calls_up"] for r in runs
                ),
                "median_sim_cpu_ms_per_call_second": statistics.median(
                    r["sim_cpu_ms_per_call_second"] for r in runs
                ),
                "median_sim_cpu_vs_senders": statistics.median(
                    r["sim_cpu_vs_senders"] for r in runs
                ),
            }
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k in ("g711", "t38")}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
