"""Document to fax TIFF rendering: geometry, tones, guards, and that spandsp sends it.

Test PDFs are made here: vector pages by Ghostscript from a few lines of PostScript
(``gs`` comes from deploy/local/apt.sh; without it these tests fail, not skip), image
pages by Pillow's PDF writer, encrypted ones by pypdf.
"""

from __future__ import annotations

import io
import multiprocessing
import subprocess
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from faxbox.fax.session import CallSettings, FaxSession
from faxbox.fax.tiffcheck import check_tiff
from faxbox.validator.bilevel import Conversion, smooth_edges
from faxbox.validator.errors import RefusalCode, RenderRefused
from faxbox.validator.render import (
    DocumentKind,
    RenderedDocument,
    Resolution,
    fit_rows,
    inspect_document,
    render,
    render_document,
)

A4 = (595, 842)
LETTER = (612, 792)
FAX_WIDTH = 1728

Pixels = npt.NDArray[np.uint8]


def gs_pdf(pages: list[str], size: tuple[int, int] = A4) -> bytes:
    """One PostScript snippet per page, on pages of ``size`` points."""
    width, height = size
    program = "\n".join(f"{page}\nshowpage" for page in pages)
    return subprocess.run(
        [
            "gs",
            "-q",
            "-dNOPAUSE",
            "-dBATCH",
            "-dSAFER",
            "-sDEVICE=pdfwrite",
            f"-dDEVICEWIDTHPOINTS={width}",
            f"-dDEVICEHEIGHTPOINTS={height}",
            "-dFIXEDMEDIA",
            "-sOutputFile=-",
            "-",
        ],
        input=program.encode(),
        capture_output=True,
        check=True,
    ).stdout


def text_ps(lines: int = 40) -> str:
    body = [
        f"60 {780 - 18 * i} moveto (Line {i}: the quick brown fox jumps) show" for i in range(lines)
    ]
    return "/Helvetica findfont 11 scalefont setfont\n" + "\n".join(body)


def pages_of(document: RenderedDocument) -> list[Pixels]:
    """Every page as 0 (black) / 255 (white), decoded by Pillow, not by our writer."""
    frames: list[Pixels] = []
    with Image.open(io.BytesIO(document.tiff)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            assert image.mode == "1"
            assert image.info.get("compression") == "group4"
            frames.append(np.asarray(image.convert("L")))
    return frames


def checked(document: RenderedDocument, tmp_path: Path, name: str = "out.tif") -> list[Pixels]:
    """The pre-flight check the fax sender runs must accept every page as it is."""
    path = tmp_path / name
    path.write_bytes(document.tiff)
    fax = check_tiff(path)
    assert fax.page_count == document.page_count
    wanted = "fine" if document.resolution is Resolution.FINE else "standard"
    for page, rendered in zip(fax.pages, document.pages, strict=True):
        assert page.width == FAX_WIDTH
        assert page.length == rendered.rows
        assert page.resolution == wanted
        assert page.compression == 4
    return pages_of(document)


def black_box(page: Pixels) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(page == 0)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


@pytest.fixture(scope="module")
def text_pdf() -> bytes:
    return gs_pdf([text_ps(), text_ps(20)])


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "resolution", "rows"),
    [
        (A4, Resolution.FINE, 2349),
        (A4, Resolution.STANDARD, 1175),
        (LETTER, Resolution.FINE, 2149),
        (LETTER, Resolution.STANDARD, 1074),
    ],
    ids=["a4-fine", "a4-standard", "letter-fine", "letter-standard"],
)
def test_page_fills_the_fax_width_keeping_its_aspect(
    tmp_path: Path, size: tuple[int, int], resolution: Resolution, rows: int
) -> None:
    # A frame drawn on the page's edges must land on the fax page's edges.
    w, h = size
    frame = f"0 setgray 4 setlinewidth 2 2 {w - 4} {h - 4} rectstroke"
    document = render(gs_pdf([frame], size), DocumentKind.PDF, resolution)
    assert fit_rows(*size, resolution.y_dpi) == rows
    (page,) = checked(document, tmp_path)
    assert page.shape == (rows, FAX_WIDTH)
    top, bottom, left, right = black_box(page)
    assert top <= 1
    assert bottom >= rows - 2
    assert left <= 1
    assert right >= FAX_WIDTH - 2
    assert document.pages[0].rotated is False


def test_landscape_page_is_turned_to_portrait(tmp_path: Path) -> None:
    # A square in the landscape page's top-left corner ends up top-right: a quarter turn
    # clockwise, the same for every page.
    w, h = A4[1], A4[0]
    document = render(gs_pdf([f"0 setgray 0 {h - 100} 100 100 rectfill"], (w, h)))
    (page,) = checked(document, tmp_path)
    assert document.pages[0].rotated is True
    assert page.shape == (2349, FAX_WIDTH)
    top, bottom, left, right = black_box(page)
    side = 100 * FAX_WIDTH / h
    assert top == 0
    assert right == FAX_WIDTH - 1
    assert abs((right - left + 1) - side) <= 2
    assert abs((bottom - top + 1) - 100 * 2349 / w) <= 2


def test_page_rotated_by_its_rotate_entry_is_shown_upright(tmp_path: Path) -> None:
    # /Rotate 90 on an A4 portrait page makes it display as landscape, turned back here.
    source = PdfReader(io.BytesIO(gs_pdf(["0 setgray 0 742 100 100 rectfill"])))
    writer = PdfWriter()
    writer.add_page(source.pages[0])
    writer.pages[0].rotate(90)
    out = io.BytesIO()
    writer.write(out)
    document = render(out.getvalue())
    (page,) = checked(document, tmp_path)
    assert document.pages[0].rotated is True
    assert page.shape == (2349, FAX_WIDTH)


# --- tones ----------------------------------------------------------------------------------


def test_hairlines_and_small_text_stay_solid(tmp_path: Path) -> None:
    ps = "\n".join(
        [
            "0 setgray 0.5 setlinewidth",
            "50 700 moveto 545 700 lineto stroke",  # horizontal 0.5 pt rule
            "300 300 moveto 300 650 lineto stroke",  # vertical 0.5 pt rule
            "/Helvetica findfont 6 scalefont setfont",
            "60 200 moveto (IIIIIIIIII) show",
        ]
    )
    document = render(gs_pdf([ps]))
    (page,) = checked(document, tmp_path)
    assert document.pages[0].conversion is Conversion.THRESHOLD
    sx, sy = FAX_WIDTH / A4[0], 2349 / A4[1]

    # The horizontal rule: black in every column it spans, never more than 3 rows thick.
    row = round((A4[1] - 700) * sy)
    band = page[row - 4 : row + 5, round(50 * sx) + 2 : round(545 * sx) - 2] == 0
    assert band.any(axis=0).all(), "the 0.5 pt rule has gaps"
    assert 1 <= band.sum(axis=0).max() <= 3

    # The vertical rule: black in every row it spans.
    col = round(300 * sx)
    band = page[round((A4[1] - 650) * sy) + 2 : round((A4[1] - 300) * sy) - 2, col - 4 : col + 5]
    assert (band == 0).any(axis=1).all(), "the vertical 0.5 pt rule has gaps"

    # 6 pt "I"s: ten separate stems, each an unbroken black run about the cap height.
    base = round((A4[1] - 200) * sy)
    text = page[base - 30 : base + 3, : round(200 * sx)] == 0
    columns = text.any(axis=0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], columns.astype(np.int8), [0]))))
    stems = list(zip(edges[::2], edges[1::2], strict=True))
    assert len(stems) == 10
    cap_rows = 0.7 * 6 * sy  # Helvetica's cap height is ~0.72 em
    for start, stop in stems:
        longest = max(_longest_run(text[:, c]) for c in range(start, stop))
        assert longest >= cap_rows * 0.9, f"stem at column {start} is broken"


def _longest_run(column: npt.NDArray[np.bool_]) -> int:
    best = run = 0
    for black in column:
        run = run + 1 if black else 0
        best = max(best, run)
    return best


def _gradient_pdf() -> bytes:
    # A smooth left-to-right ramp, black to white: a stand-in for a photograph.
    ramp = np.tile(np.linspace(0, 255, 600, dtype=np.float64), (800, 1)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(ramp, "L").save(out, format="PDF", resolution=72.0)
    return out.getvalue()


def _densities(page: Pixels, block: int = 16) -> npt.NDArray[np.float64]:
    rows, cols = (page.shape[0] // block) * block, (page.shape[1] // block) * block
    black = (page[:rows, :cols] == 0).reshape(rows // block, block, cols // block, block)
    densities: npt.NDArray[np.float64] = black.mean(axis=(1, 3))
    return densities


def test_photo_page_is_halftoned_not_thresholded(tmp_path: Path) -> None:
    document = render(_gradient_pdf())
    (page,) = checked(document, tmp_path)
    assert document.pages[0].conversion is Conversion.HALFTONE
    densities = _densities(page)
    middle = densities[densities.shape[0] // 2]
    # Intermediate local densities, many of them, falling from black to white.
    assert ((middle > 0.1) & (middle < 0.9)).mean() > 0.6
    assert len(np.unique(np.round(middle, 2))) >= 20
    assert middle[:5].mean() > 0.85
    assert middle[-5:].mean() < 0.15
    smooth = np.convolve(middle, np.ones(8) / 8, mode="valid")
    assert (np.diff(smooth) <= 0.02).all(), "density should fall steadily across the ramp"

    forced = render(_gradient_pdf(), conversion=Conversion.THRESHOLD)
    (blobs,) = pages_of(forced)
    assert forced.pages[0].conversion is Conversion.THRESHOLD
    assert ((_densities(blobs) > 0.1) & (_densities(blobs) < 0.9)).mean() < 0.05


def test_halftone_is_compact() -> None:
    # Clustered dots code into far fewer G4 bytes than error diffusion's scattered pixels.
    photo = render(_gradient_pdf())
    rows = photo.pages[0].rows
    ramp = np.tile(np.linspace(0, 255, FAX_WIDTH), (rows, 1)).astype(np.uint8)
    diffused = io.BytesIO()
    Image.fromarray(ramp, "L").convert("1", dither=Image.Dither.FLOYDSTEINBERG).save(
        diffused, format="TIFF", compression="group4"
    )
    assert len(photo.tiff) < len(diffused.getvalue()) / 2


# --- TIFF input ----------------------------------------------------------------------------


def test_black_and_white_g3_fax_tiff_is_resized_to_fine(tmp_path: Path) -> None:
    pages = []
    for n in range(2):
        image = Image.new("1", (FAX_WIDTH, 1100), 1)
        image.paste(0, (100, 100 + 50 * n, 1600, 150 + 50 * n))
        pages.append(image)
    source = io.BytesIO()
    pages[0].save(
        source,
        format="TIFF",
        compression="group3",
        dpi=(204, 98),
        save_all=True,
        append_images=pages[1:],
    )
    assert inspect_document(source.getvalue()) == (DocumentKind.TIFF, 2)
    document = render(source.getvalue(), DocumentKind.TIFF, Resolution.FINE)
    out = checked(document, tmp_path)
    assert [p.rows for p in document.pages] == [2200, 2200]  # standard rows doubled
    assert all(p.conversion is Conversion.THRESHOLD for p in document.pages)
    for n, page in enumerate(out):
        top, bottom, left, right = black_box(page)
        assert (top, left, right) == (200 + 100 * n, 100, 1599)
        assert abs(bottom - (299 + 100 * n)) <= 1

    same = render(source.getvalue(), resolution=Resolution.STANDARD)
    first = pages_of(same)[0]
    assert np.array_equal(first, np.asarray(pages[0].convert("L"))), "should pass unchanged"


def test_fax_tiff_without_resolution_tags_is_read_as_standard_or_fine() -> None:
    short = Image.new("1", (FAX_WIDTH, 1100), 1)
    source = io.BytesIO()
    short.save(source, format="TIFF", compression="group4")  # Pillow writes no dpi here
    assert render(source.getvalue()).pages[0].rows == 2200
    tall = Image.new("1", (FAX_WIDTH, 2200), 1)
    source = io.BytesIO()
    tall.save(source, format="TIFF", compression="group4")
    assert render(source.getvalue()).pages[0].rows == 2200


def test_screen_leaves_pure_black_and_white_alone(text_pdf: bytes) -> None:
    # Text rendered without anti-aliasing has no greys: forcing the halftone must not
    # touch it, so a mixed page keeps its text as a threshold would, less only the
    # edge smoothing that thresholded pages get (screen dots are left as they are).
    screened = render(text_pdf, conversion=Conversion.HALFTONE)
    assert all(p.conversion is Conversion.HALFTONE for p in screened.pages)
    thresholded = render(text_pdf, conversion=Conversion.THRESHOLD)
    for halftone, threshold in zip(pages_of(screened), pages_of(thresholded), strict=True):
        smoothed = smooth_edges(np.packbits(halftone == 0, axis=1))
        assert np.array_equal(smoothed, np.packbits(threshold == 0, axis=1))
        assert not np.array_equal(halftone, threshold), "the text had no jaggies to smooth"


def test_rgb_photo_tiff_landscape_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:450, 0:600]
    frames = []
    for n in range(3):
        red = (xs * 255 / 600).astype(np.uint8)
        green = (ys * 255 / 450).astype(np.uint8)
        blue = ((np.sin(xs / (20 + 5 * n)) + 1) * 127).astype(np.uint8)
        rgb = np.stack([red, green, blue], axis=-1)
        rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
        frames.append(Image.fromarray(rgb, "RGB"))
    source = io.BytesIO()
    frames[0].save(
        source,
        format="TIFF",
        compression="tiff_lzw",
        dpi=(100, 100),
        save_all=True,
        append_images=frames[1:],
    )
    document = render(source.getvalue())
    checked(document, tmp_path)
    assert document.page_count == 3
    assert all(p.rotated for p in document.pages)
    assert all(p.conversion is Conversion.HALFTONE for p in document.pages)
    assert all(p.rows == fit_rows(4.5, 6.0, 196) for p in document.pages)


# --- guards ---------------------------------------------------------------------------------


def test_inspect_counts_pages_without_rendering(text_pdf: bytes) -> None:
    assert inspect_document(text_pdf) == (DocumentKind.PDF, 2)


def test_encrypted_pdf_is_refused(text_pdf: bytes) -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf)))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    for call in (inspect_document, render):
        with pytest.raises(RenderRefused) as refused:
            call(out.getvalue())
        assert refused.value.code is RefusalCode.ENCRYPTED_PDF
        assert "password" in refused.value.message


def test_truncated_pdf_is_unreadable(text_pdf: bytes) -> None:
    with pytest.raises(RenderRefused) as refused:
        render(text_pdf[: len(text_pdf) * 2 // 3])
    assert refused.value.code is RefusalCode.UNREADABLE_DOCUMENT
    assert "damaged or incomplete" in refused.value.message


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncated_tiff_is_unreadable() -> None:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (900, 700), dtype=np.uint8))
    source = io.BytesIO()
    image.save(source, format="TIFF", compression="tiff_lzw", dpi=(100, 100))
    with pytest.raises(RenderRefused) as refused:
        render(source.getvalue()[:4000])
    assert refused.value.code is RefusalCode.UNREADABLE_DOCUMENT


def test_other_files_are_unsupported() -> None:
    with pytest.raises(RenderRefused) as refused:
        render(b"PK\x03\x04 a zip file, not a document")
    assert refused.value.code is RefusalCode.UNSUPPORTED_DOCUMENT


def test_too_many_pages(text_pdf: bytes) -> None:
    with pytest.raises(RenderRefused) as refused:
        render(text_pdf, max_pages=1)
    assert refused.value.code is RefusalCode.TOO_MANY_PAGES
    assert "at most 1 pages" in refused.value.message


def test_absurd_page_shape_is_refused_before_rendering() -> None:
    strip = gs_pdf(["0 setgray 10 10 50 50 rectfill"], (100, 3000))
    with pytest.raises(RenderRefused) as refused:
        render(strip)
    assert refused.value.code is RefusalCode.PAGE_TOO_LARGE
    assert refused.value.page == 1


def test_render_document_in_a_worker_matches_in_process(text_pdf: bytes, tmp_path: Path) -> None:
    isolated = render_document(text_pdf, DocumentKind.PDF, Resolution.FINE, timeout_s=60)
    assert isolated == render(text_pdf)
    checked(isolated, tmp_path)
    with pytest.raises(RenderRefused) as refused:
        render_document(text_pdf, "pdf", "fine", timeout_s=60, max_pages=1)
    assert refused.value.code is RefusalCode.TOO_MANY_PAGES


def test_slow_document_is_killed_at_the_time_limit() -> None:
    big = gs_pdf([text_ps()] * 40)
    started = time.monotonic()
    with pytest.raises(RenderRefused) as refused:
        render_document(big, timeout_s=0.02)
    assert refused.value.code is RefusalCode.RENDERING_TIMEOUT
    assert time.monotonic() - started < 5
    assert not multiprocessing.active_children(), "the worker was left running"


# --- the engine accepts it ------------------------------------------------------------------


def test_rendered_document_is_sent_by_spandsp(text_pdf: bytes, tmp_path: Path) -> None:
    document = render(text_pdf)
    sent = tmp_path / "sent.tif"
    sent.write_bytes(document.tiff)
    received = tmp_path / "received.tif"
    send = CallSettings(file=sent, local_identity="100")
    receive = CallSettings(file=received, local_identity="200")
    silence = np.zeros(160, dtype=np.int16)
    with FaxSession("send", send) as sender, FaxSession("receive", receive) as receiver:
        to_receiver = to_sender = silence
        for _ in range(300 * 50):  # 300 s of simulated call time
            if sender.done and receiver.done:
                break
            from_sender = sender.process(to_sender)
            from_receiver = receiver.process(to_receiver)
            to_receiver, to_sender = from_sender, from_receiver
        outcome = sender.result
    assert outcome.success, outcome
    assert outcome.pages_transferred == 2
    assert check_tiff(received).page_count == 2
