"""Fax pages for the SIP tests: made with Pillow, saved as fax TIFFs, compared pixel by pixel.

A copy of the approach in tests/unit/fax (test dirs do not import each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from faxbox.render import strip_rows

FAX_WIDTH = 1728
A4_FINE_ROWS = 2292  # 297 mm at 7.7 rows/mm
# Our page header line (faxbox.render.header), which the transmitter draws above each
# page; spandsp itself is told to draw none.
HEADER_ROWS_FINE = strip_rows(196)

Page = npt.NDArray[np.uint8]


def text_page(number: int, rows: int = A4_FINE_ROWS) -> Image.Image:
    """A page of text and shapes, different for every ``number``."""
    page = Image.new("1", (FAX_WIDTH, rows), 1)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=36)
    draw.text((120, 120), f"Faxbox SIP test page {number}", fill=0, font=font)
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
    return page


def save_fax_tiff(path: Path, pages: Sequence[Image.Image]) -> Path:
    """Group 4, fine resolution, the tags spandsp needs."""
    first, *rest = pages
    first.save(path, compression="group4", dpi=(204, 196), save_all=True, append_images=list(rest))
    return path


def decode_pages(path: Path) -> list[Page]:
    """Every page as 0 (black) / 255 (white), whatever the photometric or fill order."""
    with Image.open(path) as image:
        frames: list[Page] = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.array(image.convert("L"), dtype=np.uint8))
    return frames


def assert_pages_identical(sent: Path, received: Path, header: bool = False) -> None:
    """Same page count, and every page's pixels equal below the header line."""
    sent_pages = decode_pages(sent)
    received_pages = decode_pages(received)
    assert len(received_pages) == len(sent_pages)
    for original, got in zip(sent_pages, received_pages, strict=True):
        header_rows = got.shape[0] - original.shape[0]
        assert header_rows == (HEADER_ROWS_FINE if header else 0)
        assert got.shape[1] == original.shape[1]
        assert np.array_equal(got[header_rows:], original)
