"""The page header line ("tag line") drawn at the top of every page we transmit.

A fax machine prints a line across the top of each page it sends: who sent it, their
number, when, and the page number. spandsp 0.0.6 can draw one, but only in its own fixed
layout ending in ``p.N``, with no total and no say in the wording. So we draw it
ourselves, into the fax TIFF, just before the call, and spandsp draws nothing: the
pages on the line, in the sent mail's thumbnail and in the portal's preview are then
the same pixels.

The wording is the faxbox's **format string**, as in HylaFAX's ``TagLineFormat``
(``faxbox.shared.tagline``: strftime codes in the faxbox's time zone, ``%%p``/``%%t``
for page and pages, ``|`` between fields spread across the line).

Page numbers count in the whole document (``first_page``): a redial that sends only the
pages not yet confirmed still says ``page 3/5`` on the third page.

The strip is **added above** each page (as spandsp's own header was), never drawn over
it, so nothing of the document is ever hidden. It is drawn in Pillow's built-in font,
so no system font is needed.

Splicing instead of re-encoding: a Group 4 (T.6) page codes each row against the one
above it, the first against an imaginary white row. The strip ends in white rows, so a
page placed under it codes exactly as it did on its own: its stored bits are kept and
only the strip is encoded (about a millisecond a page, against ~8 ms to decode and
encode it again). Pages in other codings are decoded and encoded again.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from faxbox.render.g4tiff import FAX_WIDTH, G4TiffWriter, PackedPage

# The fields of one page's header line, for its page number and the document's pages.
HeaderLine = Callable[[int, int], Sequence[str]]

STRIP_ROWS_FINE: Final = 40  # 5.2 mm at 196 lines per inch
_FINE_DPI: Final = 196.0
_MARGIN: Final = 48  # columns on either side, ~6 mm
_FONT_SIZES: Final = (24, 22, 20, 18, 16, 14)
# Text sits on this row of a fine strip: descenders end by row 36, so the last rows
# stay white at any resolution (the splice below needs the last one white).
_BASELINE_ROW: Final = 30

_EOFB: Final = np.array([0] * 11 + [1] + [0] * 11 + [1], dtype=np.uint8)
_T6: Final = 4
_FILL_MSB2LSB: Final = 1


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fitting_font(parts: Sequence[str]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    room = FAX_WIDTH - 2 * _MARGIN
    for size in _FONT_SIZES:
        font = _font(size)
        widths = [font.getlength(part) for part in parts if part]
        if sum(widths) + 24 * max(0, len(widths) - 1) <= room:
            return font
    return _font(_FONT_SIZES[-1])


def strip_image(parts: Sequence[str], y_dpi: float = _FINE_DPI) -> Image.Image:
    """The header strip as a grey image, 1728 wide, as many rows as ``y_dpi`` needs."""
    grey = Image.new("L", (FAX_WIDTH, STRIP_ROWS_FINE), 255)
    draw = ImageDraw.Draw(grey)
    font = _fitting_font(parts)
    count = len(parts)
    room = FAX_WIDTH - 2 * _MARGIN
    for index, part in enumerate(parts):
        if not part:
            continue
        if count == 1 or index == 0:
            x, anchor = float(_MARGIN), "ls"
        elif index == count - 1:
            x, anchor = float(FAX_WIDTH - _MARGIN), "rs"
        else:
            x, anchor = _MARGIN + room * index / (count - 1), "ms"
        draw.text((x, _BASELINE_ROW), part, fill=0, font=font, anchor=anchor)
    rows = strip_rows(y_dpi)
    if rows != STRIP_ROWS_FINE:
        grey = grey.resize((FAX_WIDTH, rows), Image.Resampling.BOX)
    return grey


def strip_bits(parts: Sequence[str], y_dpi: float = _FINE_DPI) -> PackedPage:
    """The strip as packed rows (1 = black), its last rows white (see the module doc)."""
    black = np.asarray(strip_image(parts, y_dpi)) < 128
    black[-1] = False
    packed: PackedPage = np.packbits(black, axis=1)
    return packed


# --- the TIFF -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Page:
    rows: int
    x_dpi: float
    y_dpi: float
    data: bytes  # the page's one strip as stored
    spliceable: bool  # single-strip Group 4, MSB first
    image: Image.Image | None  # decoded, when it is not spliceable


def _pages(tiff: bytes) -> list[_Page]:
    pages: list[_Page] = []
    with Image.open(io.BytesIO(tiff)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            tags = image.tag_v2  # type: ignore[attr-defined]
            width, rows = image.size
            if width != FAX_WIDTH:
                raise ValueError(f"page {index + 1} is {width} pixels wide, not {FAX_WIDTH}")
            dpi = image.info.get("dpi", (204.0, 196.0))
            x_dpi, y_dpi = float(dpi[0]) or 204.0, float(dpi[1]) or 196.0
            offsets = tags.get(273)
            counts = tags.get(279)
            single = offsets is not None and counts is not None and len(offsets) == 1 == len(counts)
            spliceable = (
                single
                and tags.get(259) == _T6
                and tags.get(266, _FILL_MSB2LSB) == _FILL_MSB2LSB
                and tags.get(293, 0) == 0
            )
            if spliceable:
                start, length = int(offsets[0]), int(counts[0])
                data = tiff[start : start + length]
                pages.append(_Page(rows, x_dpi, y_dpi, data, True, None))
            else:
                pages.append(_Page(rows, x_dpi, y_dpi, b"", False, image.convert("1")))
    return pages


def _g4_bits(data: bytes) -> npt.NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def _without_eofb(bits: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
    """The coded rows before the end-of-facsimile-block mark, None if it is not there."""
    ones = np.flatnonzero(bits)
    if ones.size == 0:
        return None
    end = int(ones[-1]) + 1
    start = end - _EOFB.size
    if start < 0 or not np.array_equal(bits[start:end], _EOFB):
        return None
    return bits[:start]


def _encoded_strip(bits: PackedPage, x_dpi: float, y_dpi: float) -> bytes:
    with G4TiffWriter(1) as writer:
        writer.add_page(bits, x_dpi, y_dpi)
    (page,) = _pages(writer.getvalue())
    return page.data


def _spliced(strip: PackedPage, page: _Page) -> bytes | None:
    coded = _without_eofb(_g4_bits(_encoded_strip(strip, page.x_dpi, page.y_dpi)))
    if coded is None:
        return None
    joined = np.concatenate((coded, _g4_bits(page.data)))
    return np.packbits(joined).tobytes()


def _page_bits(image: Image.Image) -> PackedPage:
    # Mode "1": 0 is black. Packed fax rows: 1 is black.
    black = np.asarray(image) == 0
    packed: PackedPage = np.packbits(black, axis=1)
    return packed


def with_header(
    tiff: bytes,
    line: HeaderLine,
    *,
    first_page: int = 1,
    pages_total: int | None = None,
    skip_pages: int = 0,
) -> bytes:
    """``tiff`` with the header strip above each page; page numbers count from
    ``first_page`` of ``pages_total`` (default: the pages of ``tiff`` from the first).

    ``skip_pages`` leaves out that many pages at the start of ``tiff`` (a redial that
    resumes after the pages the far end confirmed); the pages kept keep their numbers.
    ``line(page, pages)`` gives the fields (``faxbox.shared.tagline.header_text`` fills
    in a faxbox's format)."""
    pages = _pages(tiff)
    if not 0 <= skip_pages < len(pages):
        raise ValueError(f"cannot leave out {skip_pages} of {len(pages)} pages")
    total = pages_total if pages_total is not None else first_page - 1 + len(pages)
    kept = list(enumerate(pages))[skip_pages:]
    with G4TiffWriter(len(kept)) as writer:
        for index, page in kept:
            parts = line(first_page + index, total)
            strip = strip_bits(parts, page.y_dpi)
            spliced = _spliced(strip, page) if page.spliceable else None
            if spliced is not None:
                writer.add_encoded_page(spliced, strip.shape[0] + page.rows, page.x_dpi, page.y_dpi)
                continue
            image = page.image
            if image is None:
                with Image.open(io.BytesIO(tiff)) as source:
                    source.seek(index)
                    image = source.convert("1")
            writer.add_page(np.concatenate((strip, _page_bits(image))), page.x_dpi, page.y_dpi)
    return writer.getvalue()


def strip_rows(y_dpi: float) -> int:
    """How many rows the header adds above a page at ``y_dpi``."""
    return max(8, round(STRIP_ROWS_FINE * y_dpi / _FINE_DPI))
