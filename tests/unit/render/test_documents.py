"""Documents as users have them: padded PDFs, small images, strips, turned and unusual
TIFFs. Each is faxed, or refused with the reason that is true.

Files are made here: PDFs by Ghostscript, TIFFs by Pillow, with libtiff's ``tiffset``
(deploy/local/apt.sh: libtiff-tools) where Pillow cannot write a tag per page.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from faxbox.render import (
    FAX_WIDTH,
    Conversion,
    DocumentKind,
    RefusalCode,
    RenderRefused,
    inspect_document,
    render,
)
from tests.unit.render.pagekit import Pixels, black_box, checked, gs_pdf, pages_of, text_ps


def tiff_bytes(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="TIFF", **options)
    return out.getvalue()


def square_image(size: int, mode: str = "L") -> Image.Image:
    """White, with a black square over the middle third."""
    image = Image.new("L", (size, size), 255)
    third = size // 3
    ImageDraw.Draw(image).rectangle((third, third, size - third - 1, size - third - 1), fill=0)
    return image.convert(mode)


def only_page(data: bytes, tmp_path: Path) -> Pixels:
    (page,) = checked(render(data), tmp_path)
    return page


# --- PDFs that are whole, and those that are not --------------------------------------------


@pytest.fixture(scope="module")
def two_page_pdf() -> bytes:
    return gs_pdf([text_ps(), text_ps(20)])


@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 20_000, b"\r\n\r\n", b"\n-- \nSent through the example.com mail gateway\n"],
    ids=["20-kb-of-nul", "blank-lines", "gateway-footer"],
)
def test_pdf_with_junk_after_its_end_is_faxed_whole(two_page_pdf: bytes, tail: bytes) -> None:
    padded = render(two_page_pdf + tail)
    assert padded.page_count == 2
    assert padded.tiff == render(two_page_pdf).tiff


def test_pdf_cut_off_in_an_update_after_an_earlier_end_marker_is_refused(
    two_page_pdf: bytes,
) -> None:
    # An incremental update (or a linearized file's first part) ends in its own %%EOF;
    # a file cut off after it holds objects past that marker, never junk.
    cut = two_page_pdf + b"\n99 0 obj\n<< /Length 4000 >>\nstream\n" + bytes(range(256)) * 3
    with pytest.raises(RenderRefused) as refused:
        render(cut)
    assert refused.value.code is RefusalCode.UNREADABLE_DOCUMENT
    assert "incomplete" in refused.value.message


def test_pdf_ending_in_its_trailer_without_an_end_marker_is_whole() -> None:
    # Some writers stop after the trailer dictionary; PDFium finds the objects itself.
    body = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj "
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj "
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj "
        b"trailer<</Size 4/Root 1 0 R>>\n"
    )
    assert render(body).page_count == 1


# --- geometry: small, short and long pages ----------------------------------------------------


@pytest.mark.parametrize(
    ("dpi", "columns", "rows"),
    [
        # 10 pixels at 72 dpi: 0.14 in, 28 columns by 27 rows at its true size.
        ((72, 72), 28, 27),
        # No stated size: enlarged 4 times at most, 40 columns (10 x 4), 38 rows.
        (None, 40, 38),
    ],
    ids=["with-dpi", "without-dpi"],
)
def test_ten_pixel_image_is_a_small_page_centred_on_the_line(
    tmp_path: Path, dpi: tuple[int, int] | None, columns: int, rows: int
) -> None:
    options = {} if dpi is None else {"dpi": dpi}
    page = only_page(tiff_bytes(square_image(10), **options), tmp_path)
    assert page.shape == (rows, FAX_WIDTH)
    left = (FAX_WIDTH - columns) // 2
    top, bottom, first, last = black_box(page)
    # The middle third is black, in the middle third of the page's own columns.
    assert left + columns / 3 - 2 <= first < last <= left + 2 * columns / 3 + 2
    assert rows / 3 - 2 <= top < bottom <= 2 * rows / 3 + 2
    assert (page[:, :left] == 255).all()
    assert (page[:, left + columns :] == 255).all()


def test_logo_of_128_pixels_at_96_dpi_is_faxed_at_its_true_size(tmp_path: Path) -> None:
    # 1.33 in square: 272 columns, 261 rows at fine; a colour logo is thresholded or
    # halftoned like any other page, and its black middle stays black.
    logo = square_image(128, "RGB")
    ImageDraw.Draw(logo).rectangle((0, 0, 127, 20), fill=(200, 30, 30))
    document = render(tiff_bytes(logo, dpi=(96, 96)))
    (page,) = checked(document, tmp_path)
    assert page.shape == (261, FAX_WIDTH)
    left = (FAX_WIDTH - 272) // 2
    assert (page[:, :left] == 255).all()
    assert (page[:, left + 272 :] == 255).all()
    middle = page[100:160, left + 100 : left + 170]
    assert (middle == 0).all()
    assert document.pages[0].rotated is False


def test_short_wide_g4_strip_is_a_short_page_not_a_refusal(tmp_path: Path) -> None:
    # A 590 x 88 signature line at 96 dpi: 6.1 x 0.9 in, kept wide (a strip is not a
    # landscape page to turn), at true size: 1254 columns, 180 rows.
    strip = Image.new("1", (590, 88), 1)
    ImageDraw.Draw(strip).line((20, 60, 570, 60), fill=0, width=3)
    document = render(tiff_bytes(strip, compression="group4", dpi=(96, 96)))
    (page,) = checked(document, tmp_path)
    assert page.shape == (180, FAX_WIDTH)
    assert document.pages[0].rotated is False
    assert document.pages[0].conversion is Conversion.THRESHOLD
    top, _, first, last = black_box(page)
    left = (FAX_WIDTH - 1254) // 2
    assert abs(first - (left + round(20 * 204 / 96))) <= 2
    assert abs(last - (left + round(570 * 204 / 96))) <= 3
    assert abs(top - round(59 * 196 / 96)) <= 3


def test_short_wide_pdf_page_is_kept_wide() -> None:
    # 400 x 72 pt (5.6 x 1 in): at true size, 1133 columns by 196 rows.
    document = render(gs_pdf(["0 setgray 10 10 380 52 rectfill"], (400, 72)))
    assert document.pages[0].rotated is False
    (page,) = pages_of(document)
    assert page.shape == (196, FAX_WIDTH)
    _, _, first, last = black_box(page)
    assert abs((last - first + 1) - round(380 / 72 * 204)) <= 2


def test_long_page_within_the_limit_is_faxed_long() -> None:
    # 100 x 3000 pt: 35 x 1058 mm, long but printable on a roll.
    document = render(gs_pdf(["0 setgray 10 10 50 50 rectfill"], (100, 3000)))
    assert document.page_count == 1
    assert document.pages[0].rows == round(3000 / 72 * 196)


def test_page_longer_than_the_limit_says_its_size_and_the_limit() -> None:
    # 1000 x 8000 pixels with no stated size, fitted to the line (x 1.728): 13,282 rows
    # at fine, 67.8 in, over the default 1.5 m.
    tall = Image.new("1", (1000, 8000), 1)
    with pytest.raises(RenderRefused) as refused:
        render(tiff_bytes(tall, compression="group4"))
    assert refused.value.code is RefusalCode.PAGE_TOO_LARGE
    assert refused.value.page == 1
    assert "1000 x 8000 pixels" in refused.value.message
    assert "1721 mm (67.8 in) long" in refused.value.message
    assert "at most 1500 mm (59.1 in)" in refused.value.message
    # The limit is a setting: 2 m lets it through.
    assert render(tiff_bytes(tall, compression="group4"), max_length_mm=2000).page_count == 1


def test_image_with_too_many_pixels_says_how_many() -> None:
    # The pixel count is read from the tags before anything is decoded.
    huge = tiff_bytes(Image.new("1", (20_000, 8_000), 1), compression="group4", dpi=(1200, 1200))
    with pytest.raises(RenderRefused) as refused:
        render(huge)
    assert refused.value.code is RefusalCode.TOO_COMPLEX
    assert "160 million pixels" in refused.value.message
    assert "at most 150 million" in refused.value.message


# --- TIFF orientation, BigTIFF, thumbnails ---------------------------------------------------

# Orientation tag -> how the upright page is stored (the inverse of what turns it back).
_STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _upright_page() -> Image.Image:
    """A G4 page with nothing symmetric about it: an F in the top-left quarter."""
    page = Image.new("1", (800, 1000), 1)
    draw = ImageDraw.Draw(page)
    draw.rectangle((100, 100, 140, 500), fill=0)
    draw.rectangle((100, 100, 350, 140), fill=0)
    draw.rectangle((100, 280, 280, 320), fill=0)
    draw.ellipse((500, 700, 700, 760), fill=0)
    return page


@pytest.mark.parametrize("orientation", list(range(1, 9)))
def test_every_tiff_orientation_is_rendered_upright(orientation: int, tmp_path: Path) -> None:
    upright = _upright_page()
    transpose = _STORED[orientation]
    stored = upright if transpose is None else upright.transpose(transpose)
    data = tiff_bytes(stored, compression="group4", dpi=(200, 200), tiffinfo={274: orientation})
    expected = pages_of(render(tiff_bytes(upright, compression="group4", dpi=(200, 200))))
    (page,) = checked(render(data), tmp_path)
    assert np.array_equal(page, expected[0])


def test_bigtiff_is_read() -> None:
    image = square_image(300)
    big = tiff_bytes(image, dpi=(100, 100), big_tiff=True)
    assert big[:4] == b"II+\x00"
    assert inspect_document(big) == (DocumentKind.TIFF, 1)
    classic = tiff_bytes(image, dpi=(100, 100))
    assert render(big).tiff == render(classic).tiff


def test_reduced_resolution_copies_are_not_pages(tmp_path: Path) -> None:
    # A scan with two overviews (half and quarter size), marked as such by NewSubfileType.
    full = square_image(600)
    path = tmp_path / "overviews.tif"
    full.save(
        path,
        format="TIFF",
        dpi=(100, 100),
        save_all=True,
        append_images=[full.resize((300, 300)), full.resize((150, 150))],
    )
    for directory in ("1", "2"):
        subprocess.run(["tiffset", "-d", directory, "-s", "254", "1", str(path)], check=True)
    data = path.read_bytes()
    assert inspect_document(data) == (DocumentKind.TIFF, 1)
    assert render(data).page_count == 1


def test_tiff_compression_that_cannot_be_decoded_is_named() -> None:
    # The same bytes with the Compression tag saying WebP (50001), which Pillow's libtiff
    # here does not decode: not "damaged", but stored in a form that cannot be read.
    data = tiff_bytes(square_image(64), dpi=(100, 100))
    raw_tag = b"\x03\x01\x03\x00\x01\x00\x00\x00\x01\x00"  # 259, SHORT, 1 value: 1
    assert data.count(raw_tag) == 1
    webp = data.replace(raw_tag, b"\x03\x01\x03\x00\x01\x00\x00\x00\x51\xc3")
    with pytest.raises(RenderRefused) as refused:
        render(webp)
    assert refused.value.code is RefusalCode.UNSUPPORTED_TIFF
    assert "WebP compression" in refused.value.message


# --- every mode Pillow loads -------------------------------------------------------------------


def _in_mode(mode: str) -> Image.Image:
    """A 300-pixel page: white paper, a black square in the middle, in ``mode``."""
    grey = square_image(300)
    if mode in ("I;16", "I;16B"):
        values = np.asarray(grey, dtype=np.uint16) * 257
        raw = values.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
        return Image.frombytes(mode, grey.size, raw)
    if mode == "I":
        return Image.fromarray(np.asarray(grey, dtype=np.int32) * 1000, "I")
    if mode == "F":
        return Image.fromarray(np.asarray(grey, dtype=np.float32) / 255.0, "F")
    if mode == "LAB":
        return grey.convert("RGB").convert("LAB")
    if mode == "P":
        return grey.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "RGBA":
        rgba = grey.convert("RGBA")
        rgba.putalpha(Image.new("L", grey.size, 255))
        return rgba
    return grey.convert(mode)


@pytest.mark.parametrize(
    "mode", ["1", "L", "P", "RGB", "RGBA", "CMYK", "LAB", "I;16", "I;16B", "I", "F"]
)
def test_every_mode_pillow_loads_is_rendered(mode: str, tmp_path: Path) -> None:
    image = _in_mode(mode)
    assert image.mode == mode
    page = only_page(tiff_bytes(image, dpi=(100, 100)), tmp_path)
    # 3 in square at true size: 612 columns, 588 rows; black middle third, white paper.
    assert page.shape == (588, FAX_WIDTH)
    left = (FAX_WIDTH - 612) // 2
    assert (page[230:360, left + 240 : left + 370] == 0).all()
    assert (page[:150, :] == 255).all()
    assert (page[:, : left + 150] == 255).all()
