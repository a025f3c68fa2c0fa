"""Document to fax TIFF rendering: geometry, tones, guards, and that spandsp sends it.

Test PDFs are made here: vector pages by Ghostscript from a few lines of PostScript
(``gs`` comes from deploy/local/apt.sh; without it these tests fail, not skip), image
pages by Pillow's PDF writer, encrypted ones by pypdf.
"""

from __future__ import annotations

import io
import multiprocessing
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
from pypdf.generic import RectangleObject

from faxbox.fax.session import CallSettings, FaxSession
from faxbox.fax.tiffcheck import check_tiff
from faxbox.render import (
    Conversion,
    DocumentKind,
    RefusalCode,
    RenderRefused,
    Resolution,
    fit_page,
    inspect_document,
    render,
    render_document,
)
from faxbox.render.bilevel import smooth_edges
from tests.unit.render.pagekit import Pixels, black_box, checked, gs_pdf, pages_of, text_ps

A4 = (595, 842)  # the same as pagekit.A4
LETTER = (612, 792)
A5 = (420, 595)
LABEL = (288, 432)  # 4 x 6 in
A3 = (842, 1191)
LEGAL = (612, 1008)
FAX_WIDTH = 1728
# A4's true width at 204 dpi, 595 / 72 in: centred on the line, 21 white columns each side.
A4_COLUMNS = 1686
A4_LEFT = 21
A4_FINE_ROWS = 2292


@pytest.fixture(scope="module")
def text_pdf() -> bytes:
    return gs_pdf([text_ps(), text_ps(20)])


# --- geometry -------------------------------------------------------------------------------


def margins_are_white(page: Pixels, left: int, columns: int) -> bool:
    return bool((page[:, :left] == 255).all() and (page[:, left + columns :] == 255).all())


@pytest.mark.parametrize(
    ("size", "resolution", "columns", "rows"),
    [
        # Narrower than the 1728-pixel line at true size: drawn at true size, centred.
        (A4, Resolution.FINE, A4_COLUMNS, A4_FINE_ROWS),
        (A4, Resolution.STANDARD, A4_COLUMNS, 1146),
        (A5, Resolution.FINE, 1190, 1620),
        (LABEL, Resolution.FINE, 816, 1176),
        (LABEL, Resolution.STANDARD, 816, 588),
        # Wider (Letter is 1734 pixels at true size): scaled down to fill the line.
        (LETTER, Resolution.FINE, FAX_WIDTH, 2149),
        (LETTER, Resolution.STANDARD, FAX_WIDTH, 1074),
        (LEGAL, Resolution.FINE, FAX_WIDTH, 2735),
        (A3, Resolution.FINE, FAX_WIDTH, 2348),
        (A3, Resolution.STANDARD, FAX_WIDTH, 1174),
    ],
    ids=[
        "a4-fine",
        "a4-standard",
        "a5-fine",
        "label-fine",
        "label-standard",
        "letter-fine",
        "letter-standard",
        "legal-fine",
        "a3-fine",
        "a3-standard",
    ],
)
def test_page_fits_the_fax_line_but_is_never_enlarged(
    tmp_path: Path, size: tuple[int, int], resolution: Resolution, columns: int, rows: int
) -> None:
    # A frame drawn on the page's edges must land on the edges of the page's own columns,
    # which are centred on the line, with white margins either side.
    w, h = size
    frame = f"0 setgray 4 setlinewidth 2 2 {w - 4} {h - 4} rectstroke"
    document = render(gs_pdf([frame], size), DocumentKind.PDF, resolution)
    assert fit_page(*size, resolution.y_dpi, per_inch=72) == (columns, rows)
    (page,) = checked(document, tmp_path)
    assert page.shape == (rows, FAX_WIDTH)
    left = (FAX_WIDTH - columns) // 2
    assert margins_are_white(page, left, columns)
    top, bottom, first, last = black_box(page)
    assert top <= 1
    assert bottom >= rows - 2
    assert left <= first <= left + 1
    assert left + columns - 2 <= last <= left + columns - 1
    assert document.pages[0].rotated is False


def test_a4_is_sent_at_true_scale() -> None:
    # 297 mm long, as on A4 paper (filling the line would make it 2349 rows, 305 mm).
    columns, rows = fit_page(*A4, Resolution.FINE.y_dpi, per_inch=72)
    assert abs(rows / 196 * 25.4 - 297.0) < 0.5
    assert abs(columns / 204 * 25.4 - 210.0) < 0.5
    # Letter already fits: 215 mm wide, the scan line, so a hair under its 279.4 mm.
    columns, rows = fit_page(*LETTER, Resolution.FINE.y_dpi, per_inch=72)
    assert columns == FAX_WIDTH
    assert 278.0 < rows / 196 * 25.4 < 279.4


def test_narrow_page_content_is_drawn_at_true_size(tmp_path: Path) -> None:
    # A one-inch square one inch from the left and bottom edges of a 4 x 6 in label:
    # 204 columns by 196 rows at fine, placed at its true distance from the page's edges.
    document = render(gs_pdf(["0 setgray 72 72 72 72 rectfill"], LABEL))
    (page,) = checked(document, tmp_path)
    columns, rows = 816, 1176
    left = (FAX_WIDTH - columns) // 2
    assert page.shape == (rows, FAX_WIDTH)
    top, bottom, first, last = black_box(page)
    assert abs(first - (left + 204)) <= 1
    assert abs((last - first + 1) - 204) <= 1
    assert abs(bottom - (rows - 196 - 1)) <= 1
    assert abs((bottom - top + 1) - 196) <= 1
    assert (page[:, :left] == 255).all()
    assert (page[:, left + columns :] == 255).all()


def test_content_beyond_the_page_box_stays_out_of_the_margins(tmp_path: Path) -> None:
    # A page whose box was cut down to 300 x 500 pt around a full A4 black fill: what
    # lies outside the box must not be drawn into the white margins around the page.
    source = PdfReader(io.BytesIO(gs_pdf(["0 setgray 0 0 595 842 rectfill"])))
    writer = PdfWriter()
    writer.add_page(source.pages[0])
    writer.pages[0].mediabox = RectangleObject([100, 100, 400, 600])
    out = io.BytesIO()
    writer.write(out)
    document = render(out.getvalue())
    (page,) = checked(document, tmp_path)
    columns, rows = fit_page(300, 500, 196, per_inch=72)
    left = (FAX_WIDTH - columns) // 2
    assert page.shape == (rows, FAX_WIDTH)
    assert margins_are_white(page, left, columns)
    assert (page[:, left : left + columns] == 0).mean() > 0.99


@pytest.mark.parametrize(
    ("size", "columns", "rows"),
    [(A4, A4_COLUMNS, A4_FINE_ROWS), (LETTER, FAX_WIDTH, 2149)],
    ids=["a4", "letter"],
)
def test_landscape_page_is_turned_to_portrait(
    tmp_path: Path, size: tuple[int, int], columns: int, rows: int
) -> None:
    # A square in the landscape page's top-left corner ends up top-right: a quarter turn
    # clockwise, the same for every page; then it is sized like the portrait page.
    w, h = size[1], size[0]
    document = render(gs_pdf([f"0 setgray 0 {h - 100} 100 100 rectfill"], (w, h)))
    (page,) = checked(document, tmp_path)
    assert document.pages[0].rotated is True
    assert page.shape == (rows, FAX_WIDTH)
    left = (FAX_WIDTH - columns) // 2
    assert margins_are_white(page, left, columns)
    top, bottom, first, last = black_box(page)
    assert top == 0
    assert last == left + columns - 1
    assert abs((last - first + 1) - 100 * columns / h) <= 2
    assert abs((bottom - top + 1) - 100 * rows / w) <= 2


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
    assert page.shape == (A4_FINE_ROWS, FAX_WIDTH)
    assert margins_are_white(page, A4_LEFT, A4_COLUMNS)
    # Displayed a quarter turn clockwise (the square top-right), then turned a quarter
    # clockwise like every landscape page: the square ends up in the page's bottom-right
    # corner, at the right edge of the page's centred columns.
    _, bottom, _, last = black_box(page)
    assert (bottom, last) == (A4_FINE_ROWS - 1, A4_LEFT + A4_COLUMNS - 1)


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
    sx, sy = A4_COLUMNS / A4[0], A4_FINE_ROWS / A4[1]
    x0 = A4_LEFT

    # The horizontal rule: black in every column it spans, never more than 3 rows thick.
    row = round((A4[1] - 700) * sy)
    band = page[row - 4 : row + 5, x0 + round(50 * sx) + 2 : x0 + round(545 * sx) - 2] == 0
    assert band.any(axis=0).all(), "the 0.5 pt rule has gaps"
    assert 1 <= band.sum(axis=0).max() <= 3

    # The vertical rule: black in every row it spans.
    col = x0 + round(300 * sx)
    band = page[round((A4[1] - 650) * sy) + 2 : round((A4[1] - 300) * sy) - 2, col - 4 : col + 5]
    assert (band == 0).any(axis=1).all(), "the vertical 0.5 pt rule has gaps"

    # 6 pt "I"s: ten separate stems, each an unbroken black run about the cap height.
    base = round((A4[1] - 200) * sy)
    text = page[base - 30 : base + 3, : x0 + round(200 * sx)] == 0
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
    # A smooth left-to-right ramp, black to white: a stand-in for a photograph. The page
    # is 600 x 800 pt, narrower than the line: GRADIENT_COLUMNS, centred.
    ramp = np.tile(np.linspace(0, 255, 600, dtype=np.float64), (800, 1)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(ramp, "L").save(out, format="PDF", resolution=72.0)
    return out.getvalue()


GRADIENT_COLUMNS = 1700
GRADIENT_LEFT = 14


def _densities(page: Pixels, block: int = 16) -> npt.NDArray[np.float64]:
    rows, cols = (page.shape[0] // block) * block, (page.shape[1] // block) * block
    black = (page[:rows, :cols] == 0).reshape(rows // block, block, cols // block, block)
    densities: npt.NDArray[np.float64] = black.mean(axis=(1, 3))
    return densities


def test_photo_page_is_halftoned_not_thresholded(tmp_path: Path) -> None:
    document = render(_gradient_pdf())
    (whole,) = checked(document, tmp_path)
    assert document.pages[0].conversion is Conversion.HALFTONE
    assert fit_page(600, 800, 196, per_inch=72)[0] == GRADIENT_COLUMNS
    assert margins_are_white(whole, GRADIENT_LEFT, GRADIENT_COLUMNS)
    page = whole[:, GRADIENT_LEFT : GRADIENT_LEFT + GRADIENT_COLUMNS]
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
    ramp = np.full((rows, FAX_WIDTH), 255, dtype=np.uint8)
    ramp[:, GRADIENT_LEFT : GRADIENT_LEFT + GRADIENT_COLUMNS] = np.linspace(
        0, 255, GRADIENT_COLUMNS
    ).astype(np.uint8)
    diffused = io.BytesIO()
    Image.fromarray(ramp, "L").convert("1", dither=Image.Dither.FLOYDSTEINBERG).save(
        diffused, format="TIFF", compression="group4"
    )
    assert len(photo.tiff) < len(diffused.getvalue()) / 2


def test_narrow_page_is_judged_photo_or_text_on_itself_not_its_margins() -> None:
    # A grey band over 7 % of a 4 x 6 in label: photo-like (over 4 % mid-grey) for the
    # page, though under 4 % of the whole 1728-pixel line with its white margins.
    w, h = LABEL
    band = f"0.5 setgray 0 {h / 2} {w} {0.07 * h:.1f} rectfill"
    document = render(gs_pdf([band], LABEL))
    assert document.pages[0].conversion is Conversion.HALFTONE


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


def _framed_tiff(size: tuple[int, int], dpi: tuple[int, int] | None) -> bytes:
    """A grey image with a black frame on its edges, with or without resolution tags."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] - 1, size[1] - 1), outline=0, width=8)
    out = io.BytesIO()
    if dpi is None:
        image.save(out, format="TIFF", compression="tiff_lzw")
    else:
        image.save(out, format="TIFF", compression="tiff_lzw", dpi=dpi)
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "dpi", "columns", "rows"),
    [
        # 4 x 6 in at 100 dpi: true size, centred.
        ((400, 600), (100, 100), 816, 1176),
        # 9 x 11 in at 200 dpi (1836 pixels at 204 dpi): scaled down to the line.
        ((1800, 2200), (200, 200), FAX_WIDTH, 2029),
        # No resolution: no true size, so it fills the line (enlarged 3.46 times).
        ((500, 750), None, FAX_WIDTH, 2490),
        # ... but is enlarged at most 4 times: 400 pixels become 1600 columns, centred.
        ((400, 600), None, 1600, 2306),
    ],
    ids=["narrow-with-dpi", "wide-with-dpi", "narrow-without-dpi", "small-without-dpi"],
)
def test_tiff_frame_is_drawn_at_its_true_size_when_known(
    tmp_path: Path,
    size: tuple[int, int],
    dpi: tuple[int, int] | None,
    columns: int,
    rows: int,
) -> None:
    document = render(_framed_tiff(size, dpi), DocumentKind.TIFF, Resolution.FINE)
    (page,) = checked(document, tmp_path)
    assert page.shape == (rows, FAX_WIDTH)
    left = (FAX_WIDTH - columns) // 2
    assert margins_are_white(page, left, columns)
    top, bottom, first, last = black_box(page)
    assert (top, bottom) == (0, rows - 1)
    assert (first, last) == (left, left + columns - 1)


def test_screen_leaves_pure_black_and_white_alone() -> None:
    # Line art is rendered without anti-aliasing, so it has no greys: forcing the
    # halftone must not touch it, so a mixed page keeps its rules and shapes as a
    # threshold would, less only the edge smoothing that thresholded pages get (screen
    # dots are left as they are). The small squares on the big one's top edge stand out
    # of it by about a pixel: the jaggies there are to smooth.
    bumps = " ".join(f"{110 + 17.3 * i:.2f} 220 0.3 0.45 rectfill" for i in range(10))
    art = (
        "0 setgray 100 300 moveto 500 340 lineto 3 setlinewidth stroke "
        f"300 550 120 0 360 arc fill 100 100 200 120 rectfill {bumps}"
    )
    line_art = gs_pdf([art])
    screened = render(line_art, conversion=Conversion.HALFTONE)
    assert all(p.conversion is Conversion.HALFTONE for p in screened.pages)
    thresholded = render(line_art, conversion=Conversion.THRESHOLD)
    for halftone, threshold in zip(pages_of(screened), pages_of(thresholded), strict=True):
        smoothed = smooth_edges(np.packbits(halftone == 0, axis=1))
        assert np.array_equal(smoothed, np.packbits(threshold == 0, axis=1))
        assert not np.array_equal(halftone, threshold), "the art had no jaggies to smooth"


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
    # 6 x 4.5 in turned to 4.5 x 6: true size, 918 x 1176, centred on the line.
    assert fit_page(4.5, 6.0, 196, per_inch=1) == (918, 1176)
    assert all(p.rows == 1176 for p in document.pages)
    for page in pages_of(document):
        assert margins_are_white(page, (FAX_WIDTH - 918) // 2, 918)


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
    # 1.4 x 69 in: longer than the 1.5 m a fax page may be (a 100 x 3000 pt strip,
    # 1058 mm, is printable since fax pages may be long: see test_documents).
    strip = gs_pdf(["0 setgray 10 10 50 50 rectfill"], (100, 5000))
    with pytest.raises(RenderRefused) as refused:
        render(strip)
    assert refused.value.code is RefusalCode.PAGE_TOO_LARGE
    assert refused.value.page == 1
    assert "35 x 1764 mm (1.4 x 69.4 in)" in refused.value.message
    assert "at most 1500 mm (59.1 in) long" in refused.value.message


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
