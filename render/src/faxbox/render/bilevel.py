"""Grey page to 1-bit fax page: threshold or clustered-dot halftone, chosen per page.

Text and line art are thresholded: line art is rendered without anti-aliasing and is
already pure black and white; text is rendered anti-aliased, and a threshold at half
coverage keeps it solid with the fewest G4 codes.
Photographs are screened with a 45-degree clustered-dot halftone: it keeps the tones,
and its dots form short runs that G4 codes compactly, unlike error diffusion
(Floyd-Steinberg), whose scattered single pixels make pages ~2.7 times larger and
so minutes longer on the line.

Thresholded pages then lose their one-pixel jaggies (``smooth_edges``): PDFium draws
glyphs unhinted, so straight stems and bowls carry single-pixel steps that a hinting
rasteriser (Ghostscript's) does not make, and G4 pays for each of them twice.

Which one a page gets is decided by its grey *area*: anti-aliased text has grey only
along its edges, one pixel wide, which a per-pixel count would mistake for a photo
(4-5 % of a text page's pixels), while photos and grey fills are grey in patches.

Everything here is whole-array numpy: 1-3 ms for a 1728 x 2300 page.
"""

from __future__ import annotations

import math
import threading
from enum import StrEnum
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

GreyPage = npt.NDArray[np.uint8]
PackedPage = npt.NDArray[np.uint8]

THRESHOLD: Final = 128
# A page is photo-like when more than this fraction of its (sampled) area is mid-grey
# in patches: a sampled pixel counts when it and its sampled neighbours to the right
# and below (4 pixels away) are all mid-grey. Anti-aliased text, whose grey is its
# one-pixel edges, measures 0.1-0.3 % (the benchmark's text pages); a scanned text
# page a little more, and a threshold turns it into cleaner letters than a screen does;
# photos measure ~40 %, grey-filled charts ~25 %.
PHOTO_FRACTION: Final = 0.04
_MID_GREY_LOW: Final = 40
_MID_GREY_HIGH: Final = 215
_SAMPLE_STEP: Final = 4

# The screen leaves near-white paper white and near-black solid, so that JPEG noise in
# backgrounds and text on a photo page does not become speckle.
_SCREEN_LOW: Final = 12
_SCREEN_HIGH: Final = 236
# Screen period: 8 pixels at 204 dpi is ~36 lines per inch at 45 degrees, coarse enough
# to survive a fax machine's print head and to compress well.
_SCREEN_PERIOD_X: Final = 8


class Conversion(StrEnum):
    """How grey becomes black and white."""

    AUTO = "auto"
    THRESHOLD = "threshold"
    HALFTONE = "halftone"


def mid_grey_fraction(grey: GreyPage) -> float:
    """Share of a coarse sample of the page that is mid-grey in patches, not edges."""
    sample = grey[::_SAMPLE_STEP, ::_SAMPLE_STEP]
    if sample.shape[0] < 2 or sample.shape[1] < 2:
        return 0.0
    mid = (sample > _MID_GREY_LOW) & (sample < _MID_GREY_HIGH)
    patch = mid[:-1, :-1] & mid[:-1, 1:] & mid[1:, :-1]
    return np.count_nonzero(patch) / sample.size


def choose(grey: GreyPage, conversion: Conversion) -> Conversion:
    if conversion is not Conversion.AUTO:
        return conversion
    if mid_grey_fraction(grey) > PHOTO_FRACTION:
        return Conversion.HALFTONE
    return Conversion.THRESHOLD


@lru_cache(maxsize=4)
def screen_tile(x_dpi: int, y_dpi: int) -> npt.NDArray[np.uint8]:
    """One period of a 45-degree round-dot screen, as per-pixel thresholds.

    The spot function is evaluated in physical units, so at standard resolution
    (pixels twice as tall as wide) the tile is half as many rows and dots stay round.
    Ranking the spot values makes every grey level switch the same number of pixels,
    so tones are reproduced evenly.
    """
    period_inches = _SCREEN_PERIOD_X / x_dpi
    cols = _SCREEN_PERIOD_X
    rows = max(2, round(period_inches * y_dpi))
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    # The product of two cosines peaks at the tile's corner and at its centre: two dots a
    # tile, on a lattice turned by 45 degrees, where the eye notices a screen least.
    spot = np.cos(2 * math.pi * xs / cols) * np.cos(2 * math.pi * ys / rows)
    # Dot centres turn black first. Ties (the two dots are alike) are broken by position
    # so that the two dots grow alternately, not together.
    order = np.lexsort((np.arange(spot.size), -spot.ravel()))
    ranks = np.empty(spot.size, dtype=np.float64)
    ranks[order] = np.arange(spot.size)
    levels = _SCREEN_LOW + (ranks + 0.5) * (_SCREEN_HIGH - _SCREEN_LOW) / spot.size
    tile: npt.NDArray[np.uint8] = np.rint(levels).astype(np.uint8).reshape(rows, cols)
    return tile


@lru_cache(maxsize=4)
def _screen_rows(x_dpi: int, y_dpi: int, width: int) -> npt.NDArray[np.uint8]:
    """One tile-height band of the screen across the whole page width."""
    tile = screen_tile(x_dpi, y_dpi)
    reps = -(-width // tile.shape[1])
    band = np.tile(tile, (1, reps))[:, :width]
    band.flags.writeable = False
    return band


_screens: dict[tuple[int, int, int], npt.NDArray[np.uint8]] = {}


def _screen(x_dpi: int, y_dpi: int, rows: int, width: int) -> npt.NDArray[np.uint8]:
    """The screen for a whole page, kept between pages: a broadcast view would make the
    comparison strided and slower, and tiling it again costs as much as the comparison."""
    key = (x_dpi, y_dpi, width)
    screen = _screens.get(key)
    if screen is None or screen.shape[0] < rows:
        band = _screen_rows(x_dpi, y_dpi, width)
        reps = -(-max(rows, 2400) // band.shape[0])
        screen = np.tile(band, (reps, 1))
        screen.flags.writeable = False
        _screens[key] = screen
    return screen[:rows]


def to_bits(
    grey: GreyPage,
    conversion: Conversion,
    x_dpi: int = 204,
    y_dpi: int = 196,
    scratch: npt.NDArray[np.bool_] | None = None,
) -> tuple[PackedPage, Conversion]:
    """Pack a grey page (0 black .. 255 white) into G4-ready rows: 1 bit a pixel, 1 = black.

    ``scratch``, a boolean array at least as large as the page, saves allocating (and
    page-faulting in) 4 MB for every page.
    """
    chosen = choose(grey, conversion)
    black = None if scratch is None else scratch.reshape(-1)[: grey.size].reshape(grey.shape)
    if chosen is Conversion.HALFTONE:
        black = np.less(grey, _screen(x_dpi, y_dpi, grey.shape[0], grey.shape[1]), out=black)
        return np.packbits(black, axis=1), chosen
    black = np.less(grey, THRESHOLD, out=black)
    return smooth_edges(np.packbits(black, axis=1)), chosen


class _Workspace(threading.local):
    """Word buffers for ``smooth_edges``, kept per thread: fresh temporaries for every
    page would cost more in page faults (~15 MB a page) than the work itself."""

    def __init__(self) -> None:
        self.buffers: list[npt.NDArray[np.uint64]] = []

    def take(self, rows: int, width: int) -> list[npt.NDArray[np.uint64]]:
        if not self.buffers or self.buffers[0].shape[0] < rows or self.buffers[0].shape[1] != width:
            self.buffers = [np.empty((rows, width), dtype=np.uint64) for _ in range(8)]
        return [buffer[:rows] for buffer in self.buffers]


_workspace = _Workspace()


def smooth_edges(bits: PackedPage) -> PackedPage:
    """Remove one-pixel bumps and fill one-pixel notches on straight edges, in place.

    A pixel changes only when its 3 x 3 neighbourhood is a straight edge, solid black
    on one side and white on the other, with the pixel alone out of line (its two
    neighbours along the edge agree with each other, not with it). Such a step costs
    G4 two one-off codes where a straight edge costs none, and is 1/200 inch: no
    glyph or rule is made or broken by taking it away. One-pixel lines and dots have no
    solid side, so hairlines, thin stems and the ends of rules are never touched; nor
    are staircases of diagonals and curves, whose neighbours along the edge differ.

    ``bits`` is a packed page (rows of whole 64-bit words, most significant bit
    leftmost, 1 = black), as from ``np.packbits(..., axis=1)``; the work runs on
    64 pixels a word, ~1 ms a page.
    """
    rows, row_bytes = bits.shape
    if rows < 3 or row_bytes % 8 or not bits.flags.c_contiguous:
        return bits
    packed = bits.view(">u8")
    words, left, right, a, b, c, d, flip = _workspace.take(rows, row_bytes // 8)
    # Native words holding the big-endian ones, so that a pixel's left neighbour is the
    # next higher bit.
    np.copyto(words, packed)
    np.right_shift(words, 1, out=left)  # at each bit: the pixel to its left
    np.left_shift(words[:, :-1], 63, out=a[:, :-1])
    np.bitwise_or(left[:, 1:], a[:, :-1], out=left[:, 1:])
    np.left_shift(words, 1, out=right)  # at each bit: the pixel to its right
    np.right_shift(words[:, 1:], 63, out=a[:, 1:])
    np.bitwise_or(right[:, :-1], a[:, 1:], out=right[:, :-1])
    a, b, c, d, flip = a[2:], b[2:], c[2:], d[2:], flip[2:]
    up, mid, down = slice(None, -2), slice(1, -1), slice(2, None)
    centre = words[mid]

    # Vertical edges: the column on one side black in all three rows, the other white,
    # and the pixel differs from the rows above and below, which agree.
    np.bitwise_xor(words[up], words[down], out=a)
    np.invert(a, out=a)
    np.bitwise_xor(centre, words[up], out=b)
    np.bitwise_and(a, b, out=a)
    _solid_against_clear(
        left[up], left[mid], left[down], right[up], right[mid], right[down], b, c, d
    )
    np.bitwise_and(a, b, out=flip)

    # Horizontal edges: the same, turned a quarter.
    np.bitwise_xor(left[mid], right[mid], out=a)
    np.invert(a, out=a)
    np.bitwise_xor(centre, left[mid], out=b)
    np.bitwise_and(a, b, out=a)
    _solid_against_clear(
        words[up], left[up], right[up], words[down], left[down], right[down], b, c, d
    )
    np.bitwise_and(a, b, out=a)
    np.bitwise_or(flip, a, out=flip)

    np.bitwise_xor(centre, flip, out=centre)
    packed[mid] = centre
    return bits


def _solid_against_clear(
    p1: npt.NDArray[np.uint64],
    p2: npt.NDArray[np.uint64],
    p3: npt.NDArray[np.uint64],
    q1: npt.NDArray[np.uint64],
    q2: npt.NDArray[np.uint64],
    q3: npt.NDArray[np.uint64],
    out: npt.NDArray[np.uint64],
    s: npt.NDArray[np.uint64],
    t: npt.NDArray[np.uint64],
) -> None:
    """``out`` = (p all black and q all white) or (q all black and p all white)."""
    np.bitwise_and(p1, p2, out=out)
    np.bitwise_and(out, p3, out=out)  # p solid
    np.bitwise_or(q1, q2, out=s)
    np.bitwise_or(s, q3, out=s)  # q has black
    np.bitwise_and(out, np.invert(s, out=s), out=out)
    np.bitwise_and(q1, q2, out=s)
    np.bitwise_and(s, q3, out=s)  # q solid
    np.bitwise_or(p1, p2, out=t)
    np.bitwise_or(t, p3, out=t)  # p has black
    np.bitwise_and(s, np.invert(t, out=t), out=s)
    np.bitwise_or(out, s, out=out)
