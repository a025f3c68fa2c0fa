"""The T.30 engine end to end: two spandsp sessions wired back to back, no line model.

Time is simulated: 20 ms blocks exchanged as fast as the CPU allows (spandsp runs a
fax call several hundred times faster than real time), so even the time-outs that
take a minute of call time finish in well under a second.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

from faxbox.fax.outcome import FailureClass
from faxbox.fax.session import (
    CallSettings,
    Compression,
    FaxEngineError,
    FaxSession,
    Modem,
    SessionNotFinished,
    T38Session,
    posix_tz,
)
from faxbox.fax.tiffcheck import TiffReason, TiffRejected, check_tiff

BLOCK = 160
BLOCKS_PER_SECOND = 50
HEADER_ROWS_FINE = 32  # spandsp prepends its page header line, 16 rows doubled at fine
SILENCE = np.zeros(BLOCK, dtype=np.int16)
FAX_WIDTH = 1728
A4_FINE_ROWS = 2292  # 297 mm at 7.7 rows/mm


def text_page(number: int, rows: int = A4_FINE_ROWS, busy_rows: int = 0) -> Image.Image:
    """A page of text and shapes; ``busy_rows`` of pseudo-random marks make it slow to send."""
    page = Image.new("1", (FAX_WIDTH, rows), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=36)
    draw.text((120, 120), f"Faxbox test page {number}", fill=0, font=font)
    for line in range(12):
        draw.text(
            (120, 220 + 48 * line),
            f"Line {line + 1}: the quick brown fox jumps over the lazy dog {number * line}",
            fill=0,
            font=font,
        )
    draw.rectangle((120 + 40 * number, 900, 900, 1300), outline=0, width=6)
    draw.ellipse((1000, 900, 1600, 1500), fill=0)
    draw.line((120, 1400, 1600, rows - 200), fill=0, width=3)
    if busy_rows:
        rng = np.random.default_rng(number)
        noise = rng.random((busy_rows, FAX_WIDTH - 240)) < 0.5
        band = Image.fromarray(np.where(noise, 0, 255).astype(np.uint8)).convert(
            "1", dither=Image.Dither.NONE
        )
        page.paste(band, (120, 1550))
    return page


def save_fax_tiff(
    path: Path, pages: Sequence[Image.Image], dpi: tuple[int, int] = (204, 196), **options: Any
) -> Path:
    """Group 4, one strip per page, with the resolution tags spandsp needs."""
    first, *rest = pages
    first.save(
        path,
        compression=options.pop("compression", "group4"),
        dpi=dpi,
        save_all=True,
        append_images=rest,
        **options,
    )
    return path


def decode_pages(path: Path) -> list[np.ndarray[tuple[int, int], np.dtype[np.uint8]]]:
    """Every page as 0 (black) / 255 (white), whatever the photometric or fill order."""
    with Image.open(path) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.array(image.convert("L")))
    return frames


@pytest.fixture
def two_page_tiff(tmp_path: Path) -> Path:
    return save_fax_tiff(tmp_path / "two.tif", [text_page(1), text_page(2)])


@pytest.fixture
def tiff_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, pages: Sequence[Image.Image], **options: Any) -> Path:
        return save_fax_tiff(tmp_path / name, pages, **options)

    return make


def run_audio(
    sender: FaxSession,
    receiver: FaxSession,
    *,
    max_seconds: float = 900,
    cut: Callable[[int], bool] | None = None,
) -> float:
    """Exchange audio until both reach phase E; ``cut(block)`` True silences the line."""
    to_receiver = to_sender = SILENCE
    block = 0
    while not (sender.done and receiver.done):
        if block >= max_seconds * BLOCKS_PER_SECOND:
            pytest.fail(f"no phase E after {max_seconds} s of call time")
        from_sender = sender.process(to_sender)
        from_receiver = receiver.process(to_receiver)
        if cut is not None and cut(block):
            from_sender = from_receiver = SILENCE
        to_receiver, to_sender = from_sender, from_receiver
        block += 1
        if block % 2000 == 0:
            # Any callback object not kept referenced would be freed here and crash.
            gc.collect()
    return block / BLOCKS_PER_SECOND


def run_t38(sender: T38Session, receiver: T38Session, max_seconds: float = 900) -> None:
    seq_ok = {id(sender): -1, id(receiver): -1}
    for _ in range(int(max_seconds * BLOCKS_PER_SECOND)):
        if sender.done and receiver.done:
            return
        sender.tick(BLOCK)
        receiver.tick(BLOCK)
        for source, sink in ((sender, receiver), (receiver, sender)):
            for packet in source.take_packets():
                # Our own counter: one number per packet, consecutive, wrapping at 16 bits.
                assert packet.seq == (seq_ok[id(source)] + 1) & 0xFFFF
                assert packet.copies >= 1
                seq_ok[id(source)] = packet.seq
                sink.rx_packet(packet.ifp, packet.seq)
    pytest.fail(f"no phase E after {max_seconds} s of call time")


def settings(file: Path, **overrides: object) -> CallSettings:
    return CallSettings.model_validate({"file": file, **overrides})


def assert_pages_identical(sent: Path, received: Path, header: bool) -> None:
    sent_pages = decode_pages(sent)
    received_pages = decode_pages(received)
    assert len(received_pages) == len(sent_pages)
    for original, got in zip(sent_pages, received_pages, strict=True):
        header_rows = got.shape[0] - original.shape[0]
        assert header_rows == (HEADER_ROWS_FINE if header else 0)
        assert got.shape[1] == original.shape[1]
        assert np.array_equal(got[header_rows:], original)
        if header:
            assert (got[:header_rows] == 0).any(), "header line is blank"


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "no-ecm"])
def test_audio_loopback_pages_arrive_pixel_identical(
    tmp_path: Path, two_page_tiff: Path, ecm: bool
) -> None:
    received = tmp_path / "received.tif"
    send = settings(
        two_page_tiff, local_identity="+44 20 7946 0000", header_name="Faxbox Ltd", ecm=ecm
    )
    receive = settings(received, local_identity="+1 555 0199", ecm=ecm)
    with FaxSession("send", send) as sender, FaxSession("receive", receive) as receiver:
        run_audio(sender, receiver)
        out, got = sender.result, receiver.result
        sender.hangup()  # after phase E: changes nothing
        assert sender.result == out

    assert_pages_identical(two_page_tiff, received, header=True)
    for outcome in (out, got):
        assert outcome.success, outcome
        assert outcome.completion_code == 0
        assert outcome.failure_class is None
        assert outcome.pages_transferred == 2
        assert outcome.pages_in_file == 2
        assert outcome.ecm is ecm
        assert outcome.bit_rate == 14400
        assert (outcome.x_resolution, outcome.y_resolution) == (8031, 7700)
        assert [p.page for p in outcome.pages] == [1, 2]
        assert all(p.width == 1728 for p in outcome.pages)
        assert all(p.bad_rows == 0 for p in outcome.pages)
    assert out.remote_id == "+1 555 0199"
    assert got.remote_id == "+44 20 7946 0000"
    assert [p.result for p in out.pages] == ["MCF", "MCF"]
    assert [p.result for p in got.pages] == ["MPS", "EOP"]
    # ECM statistics are only complete in phase D: the receiver's figures must be there.
    assert all(p.image_size > 0 and p.length > 0 for p in got.pages)
    assert check_tiff(received).page_count == 2


def test_t38_loopback_pages_arrive_pixel_identical(tmp_path: Path, two_page_tiff: Path) -> None:
    received = tmp_path / "received.tif"
    with (
        T38Session("send", settings(two_page_tiff, local_identity="100")) as sender,
        T38Session("receive", settings(received, local_identity="200")) as receiver,
    ):
        run_t38(sender, receiver)
        out, got = sender.result, receiver.result
    assert_pages_identical(two_page_tiff, received, header=False)
    assert out.success
    assert got.success
    assert out.pages_transferred == got.pages_transferred == 2
    assert (out.remote_id, got.remote_id) == ("200", "100")


def test_t38_unpaced_without_ecm(tmp_path: Path, two_page_tiff: Path) -> None:
    received = tmp_path / "received.tif"
    with (
        T38Session("send", settings(two_page_tiff, ecm=False), paced=False) as sender,
        T38Session("receive", settings(received, ecm=False), paced=False) as receiver,
    ):
        run_t38(sender, receiver)
        assert sender.result.success
        assert not sender.result.ecm
    assert_pages_identical(two_page_tiff, received, header=False)


def test_nobody_answers_is_a_line_failure(two_page_tiff: Path) -> None:
    with FaxSession("send", settings(two_page_tiff)) as sender:
        for _ in range(120 * BLOCKS_PER_SECOND):
            out = sender.process(SILENCE)
            assert out.shape == (BLOCK,)
            if sender.done:
                break
        outcome = sender.result
    assert outcome.completion_name == "T30_ERR_T0_EXPIRED"
    assert outcome.failure_class is FailureClass.LINE
    assert not outcome.success
    assert outcome.pages_transferred == 0
    assert outcome.pages_in_file == 2  # counted from the file: spandsp never opened it
    assert outcome.message
    assert outcome.hint


def test_line_cut_during_page_two_is_a_protocol_failure(
    tmp_path: Path, tiff_factory: Callable[..., Path]
) -> None:
    # Each page takes ~20 s of call time at 14400 bit/s: cutting 3 s into page 2 is mid-page.
    document = tiff_factory("long.tif", [text_page(n, busy_rows=40) for n in (1, 2, 3)])
    received = tmp_path / "received.tif"
    with (
        FaxSession("send", settings(document, ecm=False)) as sender,
        FaxSession("receive", settings(received, ecm=False)) as receiver,
    ):
        page_one_done: list[int] = []

        def cut(block: int) -> bool:
            if not page_one_done and receiver.pages:
                page_one_done.append(block)
            return bool(page_one_done) and block >= page_one_done[0] + 3 * BLOCKS_PER_SECOND

        run_audio(sender, receiver, cut=cut)
        out, got = sender.result, receiver.result

    assert got.pages_transferred == 1
    assert out.pages_transferred == 1
    assert out.pages_in_file == 3
    assert not out.success
    assert not got.success
    assert out.failure_class is FailureClass.PROTOCOL, out.completion_name
    assert got.failure_class is FailureClass.PROTOCOL, got.completion_name
    assert len(decode_pages(received)) == 1


def test_tiff_without_bits_per_sample_is_a_document_failure(
    tmp_path: Path, tiff_factory: Callable[..., Path]
) -> None:
    # Pillow's uncompressed writer leaves out BitsPerSample, which libtiff then refuses.
    bad = tiff_factory("raw.tif", [text_page(1)], compression="raw")
    with pytest.raises(TiffRejected) as rejected:
        check_tiff(bad)
    assert rejected.value.reason_code is TiffReason.BITS_PER_SAMPLE_MISSING

    with (
        FaxSession("send", settings(bad)) as sender,
        FaxSession("receive", settings(tmp_path / "received.tif")) as receiver,
    ):
        run_audio(sender, receiver)
        outcome = sender.result
    assert outcome.completion_name == "T30_ERR_FILEERROR"
    assert outcome.completion_code == 41
    assert outcome.failure_class is FailureClass.DOCUMENT
    assert outcome.pages_transferred == 0


@pytest.mark.parametrize(
    "variant",
    [
        ["-c", "g3"],
        ["-c", "none"],
        ["-B"],
    ],
    ids=["group3", "uncompressed-with-bits", "big-endian"],
)
def test_files_tiffcheck_accepts_are_sent(
    tmp_path: Path, two_page_tiff: Path, variant: list[str]
) -> None:
    import shutil
    import subprocess

    tiffcp = shutil.which("tiffcp")
    if tiffcp is None:
        pytest.skip("tiffcp (libtiff-tools) not installed")
    converted = tmp_path / "converted.tif"
    subprocess.run([tiffcp, *variant, str(two_page_tiff), str(converted)], check=True)
    assert check_tiff(converted).page_count == 2
    received = tmp_path / "received.tif"
    with (
        T38Session("send", settings(converted), paced=False) as sender,
        T38Session("receive", settings(received), paced=False) as receiver,
    ):
        run_t38(sender, receiver)
        assert sender.result.success
    assert_pages_identical(two_page_tiff, received, header=False)


def test_header_uses_the_configured_time_zone(tmp_path: Path) -> None:
    document = save_fax_tiff(tmp_path / "one.tif", [text_page(1, rows=400)])

    def header(zone: str) -> np.ndarray[tuple[int, int], np.dtype[np.uint8]]:
        received = tmp_path / f"received-{zone.replace('/', '_')}.tif"
        with (
            T38Session("send", settings(document, header_name="Faxbox", timezone=zone)) as a,
            T38Session("receive", settings(received)) as b,
        ):
            run_t38(a, b)
        return decode_pages(received)[0][:HEADER_ROWS_FINE]

    # 25 hours apart: the printed day differs whatever the time now.
    east, west = header("Pacific/Kiritimati"), header("Pacific/Pago_Pago")
    assert (east == 0).any()
    assert (west == 0).any()
    assert not np.array_equal(east, west)


def test_hangup_mid_call_reports_call_dropped(two_page_tiff: Path, tmp_path: Path) -> None:
    with (
        FaxSession("send", settings(two_page_tiff)) as sender,
        FaxSession("receive", settings(tmp_path / "r.tif")) as receiver,
    ):
        with pytest.raises(SessionNotFinished):
            _ = sender.result
        to_receiver = to_sender = SILENCE
        for _ in range(5 * BLOCKS_PER_SECOND):
            to_receiver, to_sender = sender.process(to_sender), receiver.process(to_receiver)
        sender.hangup()
        assert sender.done
        outcome = sender.result
        sender.hangup()  # idempotent
    assert outcome.completion_name == "T30_ERR_CALLDROPPED"
    assert outcome.failure_class is FailureClass.LINE


def test_process_returns_as_many_samples_as_it_gets(two_page_tiff: Path) -> None:
    session = FaxSession("send", settings(two_page_tiff))
    for n in (160, 80, 1, 0, 241):
        out = session.process(np.zeros(n, dtype=np.int16))
        assert out.dtype == np.int16
        assert out.shape == (n,)
    # The calling side sends CNG: there must be sound after a second of "silence" in.
    heard = np.concatenate([session.process(SILENCE) for _ in range(BLOCKS_PER_SECOND)])
    assert np.abs(heard).max() > 1000
    assert session.process(np.zeros(160, dtype=np.float64)).shape == (160,)
    with pytest.raises(ValueError, match="one-dimensional"):
        session.process(np.zeros((2, 80), dtype=np.int16))
    session.close()
    session.close()  # idempotent
    with pytest.raises(FaxEngineError):
        session.process(SILENCE)


def test_an_exception_in_a_callback_is_raised_to_the_caller(
    tmp_path: Path, two_page_tiff: Path
) -> None:
    class Broken(FaxSession):
        def _on_phase_b(self, frame: int) -> None:
            raise RuntimeError("boom")

    with (
        Broken("send", settings(two_page_tiff)) as sender,
        FaxSession("receive", settings(tmp_path / "r.tif")) as receiver,
        pytest.raises(FaxEngineError, match="boom"),
    ):
        run_audio(sender, receiver)


def test_restricted_modems_and_compressions_are_negotiated(
    tmp_path: Path, two_page_tiff: Path
) -> None:
    received = tmp_path / "received.tif"
    send = settings(two_page_tiff, modems={Modem.V27TER}, compressions={Compression.T4_1D})
    with (
        T38Session("send", send, paced=False) as sender,
        T38Session("receive", settings(received), paced=False) as receiver,
    ):
        run_t38(sender, receiver)
        outcome = sender.result
    assert outcome.success
    assert outcome.bit_rate == 4800
    assert {p.encoding for p in outcome.pages} == {1}  # T4_COMPRESSION_ITU_T4_1D
    assert_pages_identical(two_page_tiff, received, header=False)


def test_settings_are_validated(tmp_path: Path) -> None:
    file = tmp_path / "x.tif"
    assert settings(file, header_name="Müller & Söhne").header_name == "Muller & Sohne"
    with pytest.raises(ValidationError):
        settings(file, local_identity="+1 555 0100 0000 0000 00")  # 21 characters
    with pytest.raises(ValidationError):
        settings(file, header_name="x" * 51)
    with pytest.raises(ValidationError):
        settings(file, header_name="日本")
    with pytest.raises(ValidationError):
        settings(file, timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError):
        settings(file, modems=set())
    with pytest.raises(ValidationError):
        settings(tmp_path / ("x" * 300))
    with pytest.raises(ValidationError):
        settings(file, colour=True)
    with pytest.raises(ValidationError, match=r"T\.6 compression needs ECM"):
        settings(file, ecm=False, compressions={Compression.T6})


def test_posix_tz_converts_what_spandsp_cannot_parse() -> None:
    assert posix_tz("Europe/Berlin") == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert posix_tz("UTC") == "UTC0"
    # spandsp's parser knows no <+0330>-style names: they become letters.
    assert posix_tz("Asia/Tehran") == "STD-3:30"
    assert posix_tz("EST5EDT,M3.2.0,M11.1.0") == "EST5EDT,M3.2.0,M11.1.0"
    with pytest.raises(ValueError, match="unknown time zone"):
        posix_tz("../../etc/passwd")


def test_spandsp_log_lines_reach_python_logging(
    tmp_path: Path, two_page_tiff: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="faxbox.fax.spandsp")
    with (
        T38Session("send", settings(two_page_tiff), paced=False, name="call-42") as sender,
        T38Session("receive", settings(tmp_path / "r.tif"), paced=False) as receiver,
    ):
        run_t38(sender, receiver)
    lines = [r for r in caplog.records if r.name == "faxbox.fax.spandsp"]
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert any(r.getMessage().startswith("call-42 FLOW T.30 ") for r in lines)
    assert any(r.getMessage().startswith("t38-receive ") for r in lines)
