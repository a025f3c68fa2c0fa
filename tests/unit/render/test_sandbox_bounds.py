"""The render worker's bounds, in real worker processes: an image bomb and a document
that needs more memory than allowed are refused as too_complex, and the worker (never
its parent) carries the address-space limit and the OOM killer's first pick."""

from __future__ import annotations

import multiprocessing.connection
import os
import resource
import struct
import time
from pathlib import Path

import pytest

from faxbox.render import (
    DEFAULT_MEMORY_LIMIT_BYTES,
    RefusalCode,
    RenderRefused,
    render_document,
)
from faxbox.render.sandbox import _worker_context, bound_self


def white_g4_tiff(width: int, height: int, dpi: int = 200) -> bytes:
    """A 1-bit Group 4 TIFF of one all-white frame, built by hand: each row is a single
    V0 code (one bit) against the row above, so even 60000 x 60000 is 7.5 kB."""
    bits = "1" * height + "000000000001" * 2  # the rows, then EOFB
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    rational = 8 + 2 + 12 * 12 + 4
    strip = rational + 16
    short, long_, ratio = 3, 4, 5
    entries = [
        (256, long_, width),  # ImageWidth
        (257, long_, height),  # ImageLength
        (258, short, 1),  # BitsPerSample
        (259, short, 4),  # Compression: CCITT Group 4
        (262, short, 0),  # Photometric: min-is-white
        (273, long_, strip),  # StripOffsets
        (277, short, 1),  # SamplesPerPixel
        (278, long_, height),  # RowsPerStrip
        (279, long_, len(data)),  # StripByteCounts
        (282, ratio, rational),  # XResolution
        (283, ratio, rational + 8),  # YResolution
        (296, short, 2),  # ResolutionUnit: inch
    ]
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    out += struct.pack("<I", 0) + struct.pack("<IIII", dpi, 1, dpi, 1) + data
    return bytes(out)


def test_a_60000_by_60000_g4_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = white_g4_tiff(60_000, 60_000)
    assert len(bomb) < 10_000
    started = time.monotonic()
    with pytest.raises(RenderRefused) as refused:
        render_document(bomb, timeout_s=60)
    assert refused.value.code is RefusalCode.TOO_COMPLEX
    assert "3600 million pixels" in refused.value.message
    assert time.monotonic() - started < 30  # refused, not decoded until the time limit


def test_a_document_over_the_memory_limit_is_too_complex() -> None:
    # 144 million pixels: under the pixel cap, but decoding and scaling it takes
    # several hundred megabytes.
    heavy = white_g4_tiff(12_000, 12_000, dpi=1200)
    with pytest.raises(RenderRefused) as refused:
        render_document(heavy, timeout_s=60, memory_limit_bytes=256 << 20)
    assert refused.value.code is RefusalCode.TOO_COMPLEX
    assert "more memory than a fax may take (256 MB)" in refused.value.message
    # The limit is what refused it: with the default (1 GiB) the same file renders.
    assert render_document(heavy, timeout_s=60).page_count == 1
    assert DEFAULT_MEMORY_LIMIT_BYTES == 1 << 30


def _report_bounds(conn: multiprocessing.connection.Connection, limit: int) -> None:
    bound_self(limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    conn.send((soft, hard, Path("/proc/self/oom_score_adj").read_text().strip()))
    conn.close()


def test_the_worker_bounds_itself_and_the_parent_stays_as_it_was() -> None:
    context = _worker_context()
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_report_bounds, args=(sender, 512 << 20))  # type: ignore[attr-defined]
    worker.start()
    sender.close()
    soft, hard, oom = receiver.recv()
    worker.join(10)
    assert (soft, hard) == (512 << 20, 512 << 20)
    assert oom == "1000"  # the OOM killer's first choice, should memory run out
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
    assert Path(f"/proc/{os.getpid()}/oom_score_adj").read_text().strip() != "1000"
