"""CPU cost of the fax engine per transmitted page: our sessions vs bare spandsp.

Both sides of each call run in this process, back to back and unpaced, so the figure is
the CPU for one sender *and* one receiver per page. The baseline drives the same
libspandsp functions through ctypes with preallocated buffers and nothing else (one
phase E callback to know when to stop); the difference is what ``FaxSession`` /
``T38Session`` add: numpy buffers, callbacks collecting statistics, error checks.

Runs alternate (session, bare, session, ...) so drift in machine load hits both; the
median of 5 of each is reported. Writes benchmarks/results/engine_cpu.json.

    uv run python benchmarks/engine_cpu.py [--runs 5] [--pages 4]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faxbox.fax import spandsp
from faxbox.fax.session import CallSettings, FaxSession, T38Session
from faxbox.fax.tiffcheck import check_tiff

RESULTS = Path(__file__).parent / "results" / "engine_cpu.json"
BLOCK = 160
HEADER = "Faxbox benchmark"
SENDER_ID = "+44 20 7946 0000"
RECEIVER_ID = "+1 555 0199"


def letter_page(number: int) -> Image.Image:
    """A dense A4 text page at fine resolution, like a typical business letter."""
    page = Image.new("1", (1728, 2292), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=26)
    rng = np.random.default_rng(number)
    words = [
        "invoice",
        "payment",
        "account",
        "delivery",
        "order",
        "total",
        "please",
        "regards",
        "the",
        "of",
        "and",
        "to",
    ]
    y = 160
    while y < 2100:
        line = " ".join(str(rng.choice(words)) for _ in range(14))
        draw.text((140, y), line, fill=0, font=font)
        y += 36
    draw.rectangle((140, 100, 1588, 130), fill=0)
    return page


def make_document(folder: Path, pages: int) -> Path:
    path = folder / "letter.tif"
    first, *rest = [letter_page(n) for n in range(1, pages + 1)]
    first.save(path, compression="group4", dpi=(204, 196), save_all=True, append_images=rest)
    check_tiff(path)
    return path


def cpu(run: Callable[[], int]) -> tuple[float, int]:
    start = time.process_time()
    pages = run()
    return time.process_time() - start, pages


# --- through our sessions ---------------------------------------------------------------


def session_audio(document: Path, out: Path) -> int:
    send = CallSettings(file=document, local_identity=SENDER_ID, header_name=HEADER)
    receive = CallSettings(file=out, local_identity=RECEIVER_ID)
    with FaxSession("send", send) as a, FaxSession("receive", receive) as b:
        to_b = to_a = np.zeros(BLOCK, dtype=np.int16)
        while not (a.done and b.done):
            to_b, to_a = a.process(to_a), b.process(to_b)
        assert a.result.success, a.result
        return a.result.pages_transferred


def session_t38(document: Path, out: Path) -> int:
    send = CallSettings(file=document, local_identity=SENDER_ID, header_name=HEADER)
    receive = CallSettings(file=out, local_identity=RECEIVER_ID)
    with T38Session("send", send) as a, T38Session("receive", receive) as b:
        while not (a.done and b.done):
            a.tick(BLOCK)
            b.tick(BLOCK)
            for packet in a.take_packets():
                b.rx_packet(packet.ifp, packet.seq)
            for packet in b.take_packets():
                a.rx_packet(packet.ifp, packet.seq)
        assert a.result.success, a.result
        return a.result.pages_transferred


# --- bare spandsp through ctypes --------------------------------------------------------

lib = spandsp.lib


def _configure(t30: int, calling: bool, document: Path, out: Path) -> None:
    lib.t30_set_tx_ident(t30, (SENDER_ID if calling else RECEIVER_ID).encode())
    lib.t30_set_ecm_capability(t30, 1)
    lib.t30_set_supported_modems(
        t30, spandsp.T30_SUPPORT_V17 | spandsp.T30_SUPPORT_V29 | spandsp.T30_SUPPORT_V27TER
    )
    lib.t30_set_supported_compressions(
        t30,
        spandsp.T30_SUPPORT_T4_1D_COMPRESSION
        | spandsp.T30_SUPPORT_T4_2D_COMPRESSION
        | spandsp.T30_SUPPORT_T6_COMPRESSION,
    )
    if calling:
        lib.t30_set_tx_page_header_info(t30, HEADER.encode())
        lib.t30_set_tx_file(t30, str(document).encode(), -1, -1)
    else:
        lib.t30_set_rx_file(t30, str(out).encode(), -1)
        lib.t30_set_rx_encoding(t30, spandsp.T4_COMPRESSION_ITU_T6)


def bare_audio(document: Path, out: Path) -> int:
    finished: dict[int, int] = {}

    def phase_e(_s: int | None, user: int | None, code: int) -> None:
        finished[user or 0] = code

    handler = spandsp.PHASE_E_HANDLER(phase_e)
    a = lib.fax_init(None, 1)
    b = lib.fax_init(None, 0)
    try:
        for state, calling, tag in ((a, True, 1), (b, False, 2)):
            lib.fax_set_transmit_on_idle(state, 1)
            t30 = lib.fax_get_t30_state(state)
            _configure(t30, calling, document, out)
            lib.t30_set_phase_e_handler(t30, handler, tag)
        buf_a = (ctypes.c_int16 * BLOCK)()
        buf_b = (ctypes.c_int16 * BLOCK)()
        fax_rx, fax_tx = lib.fax_rx, lib.fax_tx
        while len(finished) < 2:
            fax_tx(a, buf_a, BLOCK)
            fax_tx(b, buf_b, BLOCK)
            fax_rx(b, buf_a, BLOCK)
            fax_rx(a, buf_b, BLOCK)
        stats = spandsp.T30Stats()
        lib.t30_get_transfer_statistics(lib.fax_get_t30_state(a), ctypes.byref(stats))
        assert finished == {1: 0, 2: 0}, finished
        return int(stats.pages_tx)
    finally:
        lib.fax_free(a)
        lib.fax_free(b)


def bare_t38(document: Path, out: Path) -> int:
    finished: dict[int, int] = {}
    queues: dict[int, list[bytes]] = {1: [], 2: []}

    def phase_e(_s: int | None, user: int | None, code: int) -> None:
        finished[user or 0] = code

    def tx_packet(_s: int | None, user: int | None, buf: int | None, n: int, _count: int) -> int:
        queues[user or 0].append(ctypes.string_at(buf, n) if buf else b"")
        return 0

    e_handler = spandsp.PHASE_E_HANDLER(phase_e)
    packet_handler = spandsp.T38_TX_PACKET_HANDLER(tx_packet)
    a = lib.t38_terminal_init(None, 1, packet_handler, 1)
    b = lib.t38_terminal_init(None, 0, packet_handler, 2)
    try:
        for state, calling, tag in ((a, True, 1), (b, False, 2)):
            t30 = lib.t38_terminal_get_t30_state(state)
            _configure(t30, calling, document, out)
            lib.t30_set_phase_e_handler(t30, e_handler, tag)
        core_a = lib.t38_terminal_get_t38_core_state(a)
        core_b = lib.t38_terminal_get_t38_core_state(b)
        seq = {1: 0, 2: 0}
        timeout, rx = lib.t38_terminal_send_timeout, lib.t38_core_rx_ifp_packet
        while len(finished) < 2:
            timeout(a, BLOCK)
            timeout(b, BLOCK)
            for source, core in ((1, core_b), (2, core_a)):
                packets, queues[source] = queues[source], []
                for packet in packets:
                    rx(core, packet, len(packet), seq[source])
                    seq[source] = (seq[source] + 1) & 0xFFFF
        stats = spandsp.T30Stats()
        lib.t30_get_transfer_statistics(lib.t38_terminal_get_t30_state(a), ctypes.byref(stats))
        assert finished == {1: 0, 2: 0}, finished
        return int(stats.pages_tx)
    finally:
        lib.t38_terminal_free(a)
        lib.t38_terminal_free(b)


# --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = "unknown"
    try:
        for line in Path("/usr/include/spandsp/version.h").read_text().splitlines():
            if "SPANDSP_RELEASE_DATETIME_STRING" in line:
                version = line.split('"')[1]
    except (OSError, IndexError):
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "spandsp_release": version,
    }


def measure(
    name: str,
    ours: Callable[[Path, Path], int],
    bare: Callable[[Path, Path], int],
    document: Path,
    folder: Path,
    runs: int,
) -> dict[str, Any]:
    ours_cpu: list[float] = []
    bare_cpu: list[float] = []
    pages = 0
    ours(document, folder / "warmup.tif")
    for _ in range(runs):
        seconds, pages = cpu(lambda: ours(document, folder / f"{name}-ours.tif"))
        ours_cpu.append(seconds)
        seconds, bare_pages = cpu(lambda: bare(document, folder / f"{name}-bare.tif"))
        bare_cpu.append(seconds)
        assert bare_pages == pages, (bare_pages, pages)
    ours_page = statistics.median(ours_cpu) / pages
    bare_page = statistics.median(bare_cpu) / pages
    return {
        "pages_per_call": pages,
        "session_cpu_s_per_page": round(ours_page, 6),
        "spandsp_cpu_s_per_page": round(bare_page, 6),
        "cpu_ratio_vs_spandsp": round(ours_page / bare_page, 3),
        "session_runs_cpu_s": [round(s, 5) for s in ours_cpu],
        "spandsp_runs_cpu_s": [round(s, 5) for s in bare_cpu],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="faxbox-bench-") as tmp:
        folder = Path(tmp)
        document = make_document(folder, args.pages)
        audio = measure("audio", session_audio, bare_audio, document, folder, args.runs)
        t38 = measure("t38", session_t38, bare_t38, document, folder, args.runs)

    result = {
        "benchmark": "engine_cpu",
        "description": (
            "CPU seconds per transmitted page, sender and receiver together in one process, "
            "unpaced; FaxSession (G.711 audio, ECM, V.17) vs the same spandsp calls made "
            "directly through ctypes. Median of the runs."
        ),
        "target": "cpu_ratio_vs_spandsp <= 2",
        "runs": args.runs,
        "cpu_ratio_vs_spandsp": audio["cpu_ratio_vs_spandsp"],
        "session_cpu_s_per_page": audio["session_cpu_s_per_page"],
        "spandsp_cpu_s_per_page": audio["spandsp_cpu_s_per_page"],
        "audio": audio,
        "t38_paced": t38,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
