"""Where a page goes on the fax page: its size, its turn, and what is too long to print.

Every fax page is 1728 pixels wide, the T.4 scan line (215 mm at 204 dpi), and as long
as its content. A page with a true size (every PDF page; a TIFF frame that states its
resolution) is drawn at that size, or scaled down to the line when it is wider (US
Letter, 8.5 in = 1734 pixels; Legal; A3): never enlarged, so A4 is 2292 rows at fine,
297 mm as on A4 paper (filling the line would make it 305 mm, which an A4 receiver must
shrink or split over two sheets; Ghostscript's fax devices and HylaFAX send A4 at true
scale too). An image without a stated resolution has no true size: it is scaled to the
line, but enlarged at most ``MAX_MAGNIFICATION`` times, so a 10 x 10 icon becomes a
small square, not a 215 mm block of ten giant pixels.

A page narrower than the line is centred on it, not left-aligned as Ghostscript's
devices leave it: a receiver printing the 215 mm line on 210 mm paper typically loses
~2.5 mm at each side, so a centred A4 page keeps both of its own margins. A page
shorter than a sheet stays short (a label, a signature strip, a logo): the receiver
prints it at the top of a sheet.

A landscape page (wider than tall, by at most ``TURN_ASPECT``) is turned a quarter
clockwise to portrait, as a printer driver does; anything wider is a strip (a label
line, a banner) and is kept as it is, scaled down to the line if it is wider.

Only what no fax machine can print is refused: a page longer than ``max_length_mm``
once fitted (default 1.5 m; roll-paper machines print long pages, sheet machines
split them), or a TIFF frame of more than ``MAX_SOURCE_PIXELS``, which would take
gigabytes to decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from faxbox.render.errors import MM_PER_INCH, no_page_size, page_too_long
from faxbox.render.g4tiff import FAX_WIDTH

X_DPI: Final = 204
DEFAULT_MAX_LENGTH_MM: Final = 1500.0
TURN_ASPECT: Final = 2.0
MAX_MAGNIFICATION: Final = 4.0
# A TIFF frame is decoded whole before scaling; 1 G pixel would be 1 GB of grey.
MAX_SOURCE_PIXELS: Final = 150_000_000


@dataclass(frozen=True, slots=True)
class Size:
    """A page's size as its source gives it: in ``per_inch`` units an inch (72: PDF
    points, 1: inches), or ``per_inch`` None when it has no true size and the units
    are source pixels (square ones, as far as its shape goes)."""

    width: float
    height: float
    per_inch: float | None

    def describe(self) -> str:
        if self.per_inch is None:
            return f"an image of {self.width:.0f} x {self.height:.0f} pixels with no stated size"
        w_in, h_in = self.width / self.per_inch, self.height / self.per_inch
        return (
            f"{w_in * MM_PER_INCH:.0f} x {h_in * MM_PER_INCH:.0f} mm ({w_in:.1f} x {h_in:.1f} in)"
        )


@dataclass(frozen=True, slots=True)
class Geometry:
    rows: int
    columns: int  # the page's width on the fax line, at most FAX_WIDTH
    left: int  # white columns left of the page: a narrower page is centred
    rotated: bool  # a landscape page turned a quarter clockwise
    # The size as placed (after any turn), in the source's units: becomes columns x rows.
    width: float
    height: float


def _scale(width: float, per_inch: float | None) -> float:
    """Fax columns per unit of ``width``: true size or a bounded enlargement, and never
    wider than the line."""
    enlargement = MAX_MAGNIFICATION if per_inch is None else X_DPI / per_inch
    return min(FAX_WIDTH / width, enlargement)


def fit_page(width: float, height: float, y_dpi: int, *, per_inch: float | None) -> tuple[int, int]:
    """(columns, rows) of a portrait ``width`` x ``height`` page on the fax page."""
    scale = _scale(width, per_inch)
    columns = min(FAX_WIDTH, max(1, round(width * scale)))
    rows = max(1, round(height * scale * (y_dpi / X_DPI)))
    return columns, rows


def place(size: Size, y_dpi: int, page: int, max_length_mm: float) -> Geometry:
    """The page's geometry on the fax page; raises ``RenderRefused`` when it has no size
    or is too long to print."""
    width, height = size.width, size.height
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        raise no_page_size(page)
    rotated = height < width <= TURN_ASPECT * height
    if rotated:
        width, height = height, width
    columns, rows = fit_page(width, height, y_dpi, per_inch=size.per_inch)
    length_mm = rows / y_dpi * MM_PER_INCH
    if length_mm > max_length_mm:
        raise page_too_long(page, size.describe(), length_mm, max_length_mm)
    return Geometry(rows, columns, (FAX_WIDTH - columns) // 2, rotated, width, height)
